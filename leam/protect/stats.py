"""Statistics of the protect experiment: per-photo success, bootstrap summaries, paired comparisons, the answers.

Success measures per (condition, photo, network), from :data:`leam.protect.experiment.RESULT_COLUMNS`:
``verification_success`` = 1 - verified (the share of the person's other photos no longer matched at the
network's FAR threshold), ``identification_success`` = 1 - identified (rank-1 no longer the person),
``drop`` = clean - protected cosine to the LEAM reference. ``sources`` and ``held_out`` are pooled networks:
per photo, the mean over the networks of that role, so every pooled photo counts once.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from leam.metrics.stats import paired_test, summarize
from leam.protect.design import Condition

__all__ = ["MEASURES", "comparisons", "leave_one_out_document", "leave_one_out_summary", "long_results", "metrics_document",
           "plot_tables", "summary_table", "visibility_summary"]

MEASURES = ("verification_success", "identification_success", "drop")
_KEYS = ["condition", "image_id", "identity", "gender"]


def long_results(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (condition, photo, network or pooled role, measure): ``value`` and the clean photo's ``clean``."""
    frame = results.copy()
    frame["verification_success"] = 1.0 - frame.verified
    frame["identification_success"] = 1.0 - frame.identified.astype(float)
    frame["verification_success_clean"] = 1.0 - frame.verified_clean
    frame["identification_success_clean"] = 1.0 - frame.identified_clean.astype(float)
    frame["drop_clean"] = 0.0
    columns = [*MEASURES, *(f"{m}_clean" for m in MEASURES)]
    pooled = frame.groupby([*_KEYS, "role"], sort=True)[columns].mean().reset_index()
    pooled["network"] = pooled.role
    both = pd.concat([frame[[*_KEYS, "network", "role", *columns]], pooled[[*_KEYS, "network", "role", *columns]]],
                     ignore_index=True)
    parts = [both[[*_KEYS, "network", "role"]].assign(measure=m, value=both[m], clean=both[f"{m}_clean"])
             for m in MEASURES]
    return pd.concat(parts, ignore_index=True)


def summary_table(long: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean with 95% bootstrap CI per (condition, network, measure), and the clean photos' mean beside it."""
    table = summarize(long, ["condition", "network", "measure"], "value", n_boot=n_boot, seed=seed)
    clean = long.groupby(["condition", "network", "measure"], sort=True)["clean"].mean().rename("clean_mean")
    return table.join(clean, on=["condition", "network", "measure"])


def comparisons(long: pd.DataFrame, conditions: Mapping[Condition, tuple[str, ...]], own: Condition) -> pd.DataFrame:
    """Paired Wilcoxon tests of the photo's own LEAM map (``own``) against every other condition of the
    ``where``, ``what`` and ``person`` questions, per pooled role and measure, on the same photos.

    Normal approximation with tie correction: success values are shares of a few photos with many ties,
    where scipy's exact small-sample path is a permutation test costing seconds per comparison."""
    pooled = long[long.network.isin(["sources", "held_out"])]
    base = pooled[pooled.condition == own.name]
    rows = []
    for condition, questions in conditions.items():
        for question in (q for q in questions if q in ("where", "what", "person")):
            if condition == own:
                continue
            other = pooled[pooled.condition == condition.name]
            merged = base.merge(other, on=["image_id", "network", "measure"], suffixes=("", "_other"))
            for (network, measure), group in merged.groupby(["network", "measure"], sort=True):
                test = paired_test(group["value"], group["value_other"], method="asymptotic")
                rows.append({"question": question, "condition": own.name, "versus": condition.name,
                             "network": network, "measure": measure, "mean": float(group["value"].mean()),
                             "mean_versus": float(group["value_other"].mean()),
                             "difference": float((group["value"] - group["value_other"]).mean()), **test})
    return pd.DataFrame(rows)


def _measures(part: pd.DataFrame, clean: bool = False) -> dict:
    """{measure: {mean, ci[, clean]}} of :func:`summary_table` rows of one condition and network."""
    return {row.measure: {"mean": row["mean"], "ci": [row.ci_low, row.ci_high],
                          **({"clean": row.clean_mean} if clean else {})} for _, row in part.iterrows()}


def _entry(summary: pd.DataFrame, condition: str) -> dict:
    return {network: _measures(summary[(summary.condition == condition) & (summary.network == network)])
            for network in ("sources", "held_out")}


def metrics_document(summary: pd.DataFrame, visibility: pd.DataFrame, conditions: Mapping[Condition, tuple[str, ...]],
                     scope: dict) -> dict:
    """``metrics/protect.json``: the scope, the clean baseline, and per question each condition's pooled
    success (sources / held-out networks) with CIs, its ``fill`` and ``location`` (what the report names it by)
    and its visibility."""
    document: dict = {**scope}
    first = next(iter(conditions)).name
    clean = summary[(summary.condition == first) & summary.network.isin(["sources", "held_out"])]
    document["clean"] = {network: {row.measure: row.clean_mean for _, row in part.iterrows()}
                         for network, part in clean.groupby("network")}
    seen = visibility_summary(visibility).set_index("condition")
    for question in ("where", "what", "person"):
        document[question] = {}
        for condition, questions in conditions.items():
            if question in questions:
                entry = {"fill": condition.fill, "location": condition.location, **_entry(summary, condition.name)}
                entry["visibility"] = {k: float(v) for k, v in seen.loc[condition.name].items()}
                document[question][condition.name] = entry
    return document


def plot_tables(summary: pd.DataFrame, conditions: Mapping[Condition, tuple[str, ...]]) -> dict[str, pd.DataFrame]:
    """Tables for ``dvc plots``: verification success against the budget (``budget``) and epsilon (``epsilon``),
    one column per (location, pooled role)."""
    success = summary[(summary.measure == "verification_success") & summary.network.isin(["sources", "held_out"])]
    tables = {}
    for question, axis in (("budget", "budget"), ("epsilon", "epsilon")):
        rows: dict[float, dict] = {}
        for condition, questions in conditions.items():
            if question not in questions:
                continue
            for _, row in success[success.condition == condition.name].iterrows():
                column = f"{condition.location.replace(':', '_')}_{row.network}"
                rows.setdefault(getattr(condition, axis), {axis: getattr(condition, axis)})[column] = row["mean"]
        tables[question] = pd.DataFrame([rows[k] for k in sorted(rows)])
    return tables


def visibility_summary(visibility: pd.DataFrame) -> pd.DataFrame:
    """Mean visibility per condition (PSNR in dB over changed photos, SSIM, changed pixels, L-infinity)."""
    return visibility.replace([np.inf], np.nan).groupby("condition", sort=False).mean(numeric_only=True).reset_index()


def leave_one_out_summary(results: pd.DataFrame, condition: Condition, n_boot: int, seed: int) -> pd.DataFrame:
    """:func:`summary_table` of the leave-one-out rotation (:func:`leam.protect.experiment.leave_one_out` rows):
    one row per left-out network and measure, and ``left_out`` pooled (per photo, the mean over the networks,
    each scored by a protection that never saw it); ``condition`` is the rotated condition's name."""
    return summary_table(long_results(results.assign(condition=condition.name)), n_boot, seed)


def leave_one_out_document(summary: pd.DataFrame, condition: Condition) -> dict:
    """``leave_one_out`` of ``metrics/protect.json``: per left-out network and pooled (``left_out``), each
    measure's mean, 95% CI and the clean photos' mean."""
    networks = {network: _measures(part, clean=True) for network, part in summary.groupby("network", sort=False)}
    return {"condition": condition.name, "fill": condition.fill, "location": condition.location,
            "budget": condition.budget, "epsilon": condition.epsilon, "networks": networks}
