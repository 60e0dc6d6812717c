"""Statistics of the similarity drops: per-image means, bootstrap summaries, LEAM vs random tests, the headline.

Input is the tidy drops table of :func:`leam.occlusion.occlusion_drops` (plus ``image_id``, ``identity``,
``gender`` where the experiment adds them). Random repeats are averaged per image first, so every test
pairs one LEAM drop with one random drop of the same image under the same target.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from leam.metrics.stats import paired_test, summarize

__all__ = ["drop_tables", "headline", "leam_vs_random", "per_image_drops", "summarize_drops"]


def per_image_drops(drops: pd.DataFrame) -> pd.DataFrame:
    """Average random repeats per image: one row per (source, target, map, threshold, kind, image...)."""
    keys = [c for c in drops.columns if c not in ("repeat", "clean", "occluded", "drop")]
    return drops.groupby(keys, sort=True, dropna=False)[["clean", "occluded", "drop"]].mean().reset_index()


def leam_vs_random(per_image: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Paired Wilcoxon test of LEAM-guided vs each random baseline, per (source, target, map, threshold).

    Pairs are the same images (``image_id``, else ``image``) under the same target; ``difference`` = mean(LEAM drop - random drop).
    """
    by = list(by)
    key = "image_id" if "image_id" in per_image.columns else "image"
    leam = per_image[per_image.kind == "leam"]
    rows = []
    for kind in sorted(k for k in per_image.kind.unique() if k != "leam"):
        rand = per_image[per_image.kind == kind][["target", "threshold", key, *by, "drop"]]
        merged = leam.merge(rand, on=["target", "threshold", key, *by], suffixes=("", "_random"))
        for keys, group in merged.groupby(["source", "target", "map", "threshold", *by], sort=True):
            test = paired_test(group["drop"], group["drop_random"])
            diff = (group["drop"] - group["drop_random"]).to_numpy(dtype=np.float64)
            rows.append({**dict(zip(["source", "target", "map", "threshold", *by], keys)), "random": kind,
                         "leam_mean": float(np.nanmean(group["drop"])),
                         "random_mean": float(np.nanmean(group["drop_random"])),
                         "difference": float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan"),
                         **test})
    return pd.DataFrame(rows)


def summarize_drops(per_image: pd.DataFrame, by: Sequence[str] = (), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean drop with 95% bootstrap CI per (source, target, map, threshold, kind, *by)."""
    return summarize(per_image, ["source", "target", "map", "threshold", "kind", *by], "drop", n_boot=n_boot, seed=seed)


def drop_tables(drops: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """The occlusion stage's tables by file stem: ``drops`` as given, ``summary`` and ``by_gender`` (bootstrap
    CIs seeded by ``seed``), ``tests`` (LEAM vs each random baseline, pooled as gender ``all`` and per gender).

    ``drops`` needs a ``gender`` column (and ``image_id`` to pair images across targets' rows).
    """
    per_image = per_image_drops(drops)
    tests = pd.concat([leam_vs_random(per_image).assign(gender="all"), leam_vs_random(per_image, by=["gender"])],
                      ignore_index=True)
    return {"drops": drops, "summary": summarize_drops(per_image, seed=seed),
            "by_gender": summarize_drops(per_image, by=["gender"], seed=seed), "tests": tests}


def headline(summary: pd.DataFrame, tests: pd.DataFrame, threshold: float, map_name: str) -> dict:
    """Flat metrics at ``threshold`` for source = target: LEAM and random mean drops with CIs and p-values,
    plus the transfer matrix of mean LEAM drops (``<source>__<target>``)."""
    out: dict = {"threshold": threshold, "map": map_name, "models": {}, "transfer": {}}
    at = summary[np.isclose(summary.threshold, threshold)]
    leam = at[(at.kind == "leam") & (at["map"] == map_name)]
    for _, row in leam.iterrows():
        if row.source == row.target:
            model = {"n": int(row.n), "leam_drop": row["mean"], "leam_ci": [row.ci_low, row.ci_high]}
            for _, rnd in at[(at.kind != "leam") & (at.target == row.target)].iterrows():
                model[f"{rnd.kind}_drop"] = rnd["mean"]
                model[f"{rnd.kind}_ci"] = [rnd.ci_low, rnd.ci_high]
            sel = tests[(tests.source == row.source) & (tests.target == row.target) & (tests["map"] == map_name)
                        & np.isclose(tests.threshold, threshold)] if len(tests) else tests
            if "gender" in sel.columns:  # the headline pools genders
                sel = sel[sel.gender == "all"]
            for _, test in sel.iterrows():
                model[f"p_vs_{test.random}"] = test.p_value
            out["models"][row.source] = model
        out["transfer"][f"{row.source}__{row.target}"] = row["mean"]
    return out
