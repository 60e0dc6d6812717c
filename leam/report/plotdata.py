"""Small plot-ready tables for `dvc plots show` / `dvc plots diff`, cut from the analysis summaries.

DVC's top-level plots draw one x column against one or more y columns per file, so each table here is wide
(one column per series) and one file per model. Nothing is recomputed: these are selections of the
summary CSVs written by the `correlate`, `similarity` and `occlusion` stages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RANDOM_KINDS = ("random_uniform", "random_face", "random_blob")


def region_shares(shares_summary: pd.DataFrame, model: str, threshold: float, layer: str = "overall") -> pd.DataFrame:
    """part, share: mean share of the top-``threshold`` pixels per face region (one model, one map)."""
    rows = shares_summary[(shares_summary.model == model) & (shares_summary.layer == layer)
                          & np.isclose(shares_summary.threshold, threshold) & (shares_summary.level == "region")]
    return (rows[["part", "mean"]].rename(columns={"mean": "share"}).sort_values("share", ascending=False)
            .reset_index(drop=True))


def similarity_by_layer(summary: pd.DataFrame, model: str, threshold: float, layers: list[str],
                        metric: str = "bc") -> pd.DataFrame:
    """depth, layer, same, different: mean similarity of same- vs different-identity pairs per layer."""
    rows = summary[(summary.model == model) & np.isclose(summary.threshold, threshold) & (summary.metric == metric)]
    wide = rows.pivot_table(index="layer", columns="pair_type", values="mean").reindex(layers)
    wide = wide.reindex(columns=["same", "different"])
    wide.insert(0, "depth", np.arange(len(wide)))
    return wide.reset_index()[["depth", "layer", "same", "different"]]


def occlusion_by_threshold(summary: pd.DataFrame, model: str, guide_map: str) -> pd.DataFrame:
    """threshold, leam, random_*: mean drop in cosine similarity on the source model itself."""
    leam = summary[(summary.source == model) & (summary.target == model) & (summary["map"] == guide_map)
                   & (summary.kind == "leam")].set_index("threshold")["mean"].rename("leam")
    table = leam.to_frame()
    for kind in RANDOM_KINDS:
        rand = summary[(summary.target == model) & (summary.kind == kind)].groupby("threshold")["mean"].mean()
        table[kind] = rand.reindex(table.index)
    return table.reset_index().sort_values("threshold").reset_index(drop=True)
