"""Within-person variability of LEAM explanations.

How stable is what a network looks at across photos of one person? Two measures, both coefficients of
variation CV = std / mean with the sample standard deviation (ddof=1) across that person's images:

- share CV: for each face class and region, the CV of its share of the top-t most relevant pixels
  (``data/correlation/shares_per_image.csv`` at the top-level ``threshold``). Undefined (NaN, counted)
  when the part never receives relevance for that person (mean 0).
- map CV: the maps themselves. Each image's map becomes a pooled, normalised distribution (grid cells,
  ``leam.metrics.distributions``); for each cell, CV over the person's images; ``map_cv`` is the unweighted
  mean of the cell CVs over the person's face region, ``map_cv_weighted`` the mass-weighted mean
  sum_k std_k / sum_k mean_k over the same cells (less sensitive to cells with almost no mass). The face
  region is the cells that are face in at least half of the person's images (parser labels), or, without
  labels, every cell. Cells of the region with mean 0 in every image carry no relevance and are skipped.

Persons with fewer than ``min_images`` usable images are skipped and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leam.errors import LeamError
from leam.metrics.stats import compare_groups, summarize


def coefficient_of_variation(std, mean) -> np.ndarray:
    """CV = std / mean, elementwise (float64); NaN where the mean is not positive.

    ``std`` is the sample standard deviation (ddof=1) over a person's images and ``mean`` the mean over
    the same images; the callers compute both (they report them too) and need at least 2 images. A part
    or cell whose mean is 0 never receives relevance for that person: its CV is undefined, not 0 or inf.
    """
    std, mean = np.asarray(std, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, std / mean, np.nan)


def select_threshold(shares: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows of ``shares`` at ``threshold`` (float tolerance); a missing threshold is a LeamError."""
    keep = np.isclose(shares["threshold"].to_numpy(dtype=np.float64), threshold)
    if not keep.any():
        available = sorted(shares["threshold"].unique())
        raise LeamError(f"threshold={threshold!r} not in the correlation shares; available: "
                        f"{', '.join(map(str, available))}")
    return shares.loc[keep]


def share_variability(shares: pd.DataFrame, threshold: float, min_images: int = 2) -> pd.DataFrame:
    """Per model, layer, identity and part: n_images, mean_share, std_share (ddof=1), cv.

    ``shares`` is the correlate stage's long table: model, layer, threshold, image_id, identity, gender,
    ``level`` (``class`` or ``region``), ``part`` (class or region name), share; one row per image and part.
    A table with a plain ``class`` column instead of level/part is read as level ``class``. Identities
    with fewer than ``min_images`` images are dropped.
    """
    if "part" not in shares.columns and "class" in shares.columns:
        shares = shares.assign(level="class", part=shares["class"])
    missing = {"model", "layer", "threshold", "image_id", "identity", "gender", "level", "part", "share"} - set(shares.columns)
    if missing:
        raise LeamError(f"shares table lacks columns: {', '.join(sorted(missing))}")
    rows = select_threshold(shares, threshold)
    keys = ["model", "layer", "identity", "gender", "level", "part"]
    grouped = rows.groupby(keys, sort=True, dropna=False)["share"]
    table = grouped.agg(n_images="count", mean_share="mean", std_share="std").reset_index()
    table = table[table.n_images >= max(min_images, 2)].reset_index(drop=True)
    table["cv"] = coefficient_of_variation(table.std_share, table.mean_share)
    return table


def map_variability(probs: np.ndarray, identities, face_fraction: np.ndarray | None = None,
                    min_images: int = 2) -> pd.DataFrame:
    """Per identity: n_images, n_cells, map_cv, map_cv_weighted of pooled normalised maps.

    probs: (N, K) distributions of valid maps only (rows sum to 1).
    identities: (N,) identity of each row.
    face_fraction: optional (N, K) share of each cell's pixels that are face in that image.
    """
    probs = np.asarray(probs, dtype=np.float64)
    identities = np.asarray(identities)
    if probs.ndim != 2 or probs.shape[0] != identities.size:
        raise LeamError(f"probs {probs.shape} and identities ({identities.size},) do not match")
    rows = []
    for identity in np.unique(identities):
        members = np.flatnonzero(identities == identity)
        if members.size < max(min_images, 2):
            continue
        block = probs[members]
        region = (np.ones(block.shape[1], dtype=bool) if face_fraction is None
                  else np.asarray(face_fraction)[members].mean(axis=0) >= 0.5)
        mean = block.mean(axis=0)
        std = block.std(axis=0, ddof=1)
        cells = region & (mean > 0)
        cv = coefficient_of_variation(std, mean)
        rows.append({"identity": identity, "n_images": int(members.size), "n_cells": int(cells.sum()),
                     "map_cv": float(cv[cells].mean()) if cells.any() else np.nan,
                     "map_cv_weighted": float(std[cells].sum() / mean[cells].sum()) if cells.any() else np.nan})
    return pd.DataFrame(rows, columns=["identity", "n_images", "n_cells", "map_cv", "map_cv_weighted"])


def summarize_by_gender(table: pd.DataFrame, keys: list[str], value: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean CV with 95% bootstrap CI per ``keys`` for all persons (gender ``all``) and per gender."""
    overall = summarize(table.assign(gender="all"), [*keys, "gender"], value, n_boot=n_boot, seed=seed)
    split = summarize(table, [*keys, "gender"], value, n_boot=n_boot, seed=seed)
    return pd.concat([overall, split], ignore_index=True)


def gender_tests(table: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mann-Whitney test of female vs male per ``keys`` (rank_biserial > 0: women vary more)."""
    rows = []
    for key, group in table.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        female = group.loc[group.gender == "female", value].to_numpy()
        male = group.loc[group.gender == "male", value].to_numpy()
        rows.append({**dict(zip(keys, key)), "n_female": int(np.isfinite(female).sum()),
                     "n_male": int(np.isfinite(male).sum()), **compare_groups(female, male)})
    return pd.DataFrame(rows)
