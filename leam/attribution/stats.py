"""Statistics of the explain curves: per-photo AUCs, means with bootstrap CIs, tests against LEAM, the two signs.

Input is the per-photo curve table of :func:`leam.attribution.experiment.run` (``source, target, method,
curve, fraction, image_id, identity, gender, cosine``). A method is *better* than another on deletion
when its AUC is lower (the match falls faster as its pixels go) and on insertion when it is higher.
Every comparison pairs the same photos under the same (source, target) with a Wilcoxon signed-rank test
(:func:`leam.metrics.stats.paired_test`); CIs are percentile bootstraps (:func:`leam.metrics.stats.summarize`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from leam.attribution.curves import curve_auc
from leam.attribution.methods import SIGNED, method_sign
from leam.metrics.stats import paired_test, summarize

__all__ = ["ALPHA", "BETTER", "REFERENCE_METHOD", "auc_per_image", "explain_tables", "metrics_document",
           "plot_tables", "sign_separation", "versus_reference"]

REFERENCE_METHOD = "leam:overall"
"""The method every other is tested against: the pipeline's default LEAM map."""
BETTER = {"deletion": "lower", "insertion": "higher"}
ALPHA = 0.05
PAIR = ["source", "target", "curve"]


def auc_per_image(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target, method, curve, photo) with its normalised ``auc`` (``curve_auc``)."""
    return curve_auc(curves, ["source", "target", "method", "curve", "image_id", "identity", "gender"])


def _ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """``rank`` 1 = the best mean AUC of its (source, target, curve): lowest for deletion, highest for insertion."""
    score = np.where(summary.curve == "deletion", summary["mean"], -summary["mean"])
    ranks = summary.assign(_score=score).groupby(PAIR)["_score"].rank(method="min")
    return summary.assign(rank=ranks.astype(int), sign=summary.method.map(method_sign))


def _paired(per_image: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Rows of ``first`` joined with ``second``'s AUC of the same photo (column ``auc_other``)."""
    left = per_image[per_image.method == first]
    right = per_image[per_image.method == second][[*PAIR, "image_id", "auc"]]
    return left.merge(right, on=[*PAIR, "image_id"], suffixes=("", "_other"))


def versus_reference(per_image: pd.DataFrame, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Paired Wilcoxon of every method against ``reference`` per (source, target, curve).

    ``difference`` = mean(method AUC - reference AUC); ``verdict`` = ``better`` / ``worse`` than the
    reference when p < ALPHA in that direction (see ``BETTER``), else ``tie``.
    """
    rows = []
    for method in sorted(set(per_image.method) - {reference}):
        for keys, group in _paired(per_image, method, reference).groupby(PAIR, sort=True):
            test = paired_test(group["auc"], group["auc_other"])
            difference = float(np.nanmean(group["auc"] - group["auc_other"]))
            gain = -difference if keys[2] == "deletion" else difference
            verdict = "tie" if not test["p_value"] < ALPHA else ("better" if gain > 0 else "worse")
            rows.append({**dict(zip(PAIR, keys)), "method": method, "reference": reference,
                         "method_auc": float(np.nanmean(group["auc"])), "reference_auc": float(np.nanmean(group["auc_other"])),
                         "difference": difference, **test, "verdict": verdict})
    columns = [*PAIR, "method", "reference", "method_auc", "reference_auc", "difference", "wilcoxon_w", "p_value", "n",
               "verdict"]
    return pd.DataFrame(rows, columns=columns)


def sign_separation(per_image: pd.DataFrame) -> pd.DataFrame:
    """Does a curve tell the map of what supports the match from the map of what opposes it?

    For each signed map present with both signs (``leam:<map>`` / ``leam_opposes:<map>``,
    ``layercam_fusion`` / ``layercam_fusion_opposes``): paired Wilcoxon of the two AUCs; ``separates``
    when p < ALPHA and the supporting map is the better one (lower deletion, higher insertion AUC).
    """
    rows = []
    for label in sorted(set(per_image.method)):
        family, _, rest = label.partition(":")
        if family not in SIGNED:
            continue
        opposite = SIGNED[family] + (f":{rest}" if rest else "")
        for keys, group in _paired(per_image, label, opposite).groupby(PAIR, sort=True):
            test = paired_test(group["auc"], group["auc_other"])
            difference = float(np.nanmean(group["auc"] - group["auc_other"]))
            right_way = difference < 0 if keys[2] == "deletion" else difference > 0
            rows.append({**dict(zip(PAIR, keys)), "method": label, "opposite": opposite,
                         "supports_auc": float(np.nanmean(group["auc"])), "opposes_auc": float(np.nanmean(group["auc_other"])),
                         "difference": difference, **test, "separates": bool(right_way and test["p_value"] < ALPHA)})
    columns = [*PAIR, "method", "opposite", "supports_auc", "opposes_auc", "difference", "wilcoxon_w", "p_value", "n",
               "separates"]
    return pd.DataFrame(rows, columns=columns)


def explain_tables(curves: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The stage's tables by file stem: ``curves`` (mean cosine with 95% CI per step), ``auc`` (mean AUC with
    CI and rank per method), ``auc_per_image``, ``tests`` (every method vs LEAM overall) and ``signs``."""
    per_image = auc_per_image(curves)
    curve_means = summarize(curves, ["source", "target", "method", "curve", "fraction"], "cosine", n_boot, seed)
    auc = _ranked(summarize(per_image, ["source", "target", "method", "curve"], "auc", n_boot, seed))
    return {"curves": curve_means, "auc": auc, "auc_per_image": per_image, "tests": versus_reference(per_image),
            "signs": sign_separation(per_image)}


def _curve_block(auc: pd.DataFrame, tests: pd.DataFrame, signs: pd.DataFrame) -> dict:
    """Metrics of one (source, target, curve): winner, LEAM's rank, every method's AUC, the sign tests."""
    best = auc.sort_values("rank", kind="stable").iloc[0]
    leam = auc[auc.method == REFERENCE_METHOD]
    block = {"winner": best.method, "winner_auc": best["mean"],
             "leam_rank": int(leam["rank"].iloc[0]) if len(leam) else None, "methods": int(len(auc)),
             "auc": {row.method: {"mean": row["mean"], "ci": [row.ci_low, row.ci_high]} for _, row in auc.iterrows()},
             "beats_leam": sorted(tests.method[tests.verdict == "better"]),
             "loses_to_leam": sorted(tests.method[tests.verdict == "worse"])}
    block["signs"] = {row.method: {"separates": bool(row.separates), "p_value": row.p_value,
                                   "supports_auc": row.supports_auc, "opposes_auc": row.opposes_auc}
                      for _, row in signs.iterrows()}
    return block


def metrics_document(tables: Mapping[str, pd.DataFrame], face_share: float, design: Mapping) -> dict:
    """``metrics/explain.json``: per source (= target) and per transfer pair, for deletion and insertion, the
    winner, LEAM overall's rank and every AUC with its CI, the methods better / worse than LEAM, and
    whether each curve separates the two signs; ``face_share`` = mean face-region share of the frame
    (the paper's top-1%-of-the-frame test sits at fraction 0.01 / face_share of these curves)."""
    auc, tests, signs = tables["auc"], tables["tests"], tables["signs"]
    out: dict = {**design, "reference_method": REFERENCE_METHOD, "face_share": face_share,
                 "n_images": int(tables["auc_per_image"].image_id.nunique()), "models": {}, "transfer": {}}
    for (source, target), group in auc.groupby(["source", "target"], sort=False):
        entry = {curve: _curve_block(rows, tests[(tests.source == source) & (tests.target == target) & (tests.curve == curve)],
                                     signs[(signs.source == source) & (signs.target == target) & (signs.curve == curve)])
                 for curve, rows in group.groupby("curve", sort=True)}
        if source == target:
            out["models"][source] = entry
        else:
            out["transfer"][f"{source}__{target}"] = entry
    reference = signs[signs.method == REFERENCE_METHOD]
    out["signs_separated"] = {curve: {"pairs": int(len(rows)), "separated": int(rows.separates.sum())}
                              for curve, rows in reference.groupby("curve", sort=True)}
    return out


def plot_tables(curve_means: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Wide tables for ``dvc plots`` by ``<curve>/<model>`` (source = target): ``fraction`` and one mean-cosine
    column per method (``:`` and ``.`` in labels become ``_``: vega reads a dot as a nested field)."""
    own = curve_means[curve_means.source == curve_means.target]
    out = {}
    for (curve, model), rows in own.groupby(["curve", "source"], sort=True):
        wide = rows.pivot_table(index="fraction", columns="method", values="mean").reset_index()
        wide.columns = [str(c).replace(":", "_").replace(".", "_") for c in wide.columns]
        out[f"{curve}/{model}"] = wide
    return out
