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
  region is the cells that are face in at least half of the person's images (``leam.face_region``, the
  policy of params ``face_region``), or, without a region mask, every cell. Cells of the region with mean 0 in every image carry no relevance and are skipped.

Persons with fewer than ``min_images`` usable images are skipped and counted.

Summaries (:func:`summarise_variability`) give the mean CV over persons with a 95% bootstrap CI, for
everyone and per gender, and a Mann-Whitney test of women vs men; :func:`metrics_document` is the small
JSON of the ``variability`` stage.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from leam.errors import LeamError
from leam.metrics.distributions import maps_to_distributions, pool_area
from leam.metrics.stats import compare_groups, summarize
from leam.topt import effective_thresholds

__all__ = ["PER_IDENTITY_COLUMNS", "MapVariability", "coefficient_of_variation", "gender_tests", "map_variability",
           "metrics_document", "model_map_variability", "select_threshold", "share_variability",
           "summarise_variability", "summarize_by_gender"]

PER_IDENTITY_COLUMNS = ["model", "layer", "threshold", "identity", "gender", "n_images", "n_cells", "map_cv",
                        "map_cv_weighted"]
"""Columns of the map-CV table (``data/variability/per_identity.csv``), one row per model/layer/threshold/person."""


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


class MapVariability(NamedTuple):
    """One model's map CVs: ``table`` (columns :data:`PER_IDENTITY_COLUMNS`), the maps excluded for having
    no mass (summed over layers and thresholds) and the persons skipped for having too few images."""

    table: pd.DataFrame
    maps_excluded: int
    persons_skipped: int


def model_map_variability(model: str, maps: np.ndarray, layers: dict, meta: pd.DataFrame, grid: int,
                          negative_policy: str, threshold: float, min_images: int = 2,
                          face_mask: np.ndarray | None = None, region_mask: np.ndarray | None = None
                          ) -> MapVariability:
    """Map CV per layer, threshold (1.0 = full map, and the top-``threshold`` map) and person of one model.

    maps: (N, L, G, G) stored LEAM maps, ``layers`` their layers.json, ``meta`` their meta.csv (row i = map i);
    each map becomes a distribution over ``grid`` x ``grid`` cells (``maps_to_distributions`` with
    ``negative_policy``, restricted to ``face_mask`` (N, G, G) bool when given). region_mask: (N, G, G)
    bool face pixels that define each person's face region (cells face in at least half of the person's
    images); None = every cell.
    """
    face_fraction = None
    if region_mask is not None:
        face_fraction = pool_area(region_mask.astype(np.float32), grid).reshape(len(meta), -1)
    tables, excluded = [], 0
    for layer_index, layer in enumerate(layers["layers"]):
        layer_maps = np.asarray(maps[:, layer_index], dtype=np.float32)
        for fraction in effective_thresholds([1.0], threshold):
            dist = maps_to_distributions(layer_maps, grid, negative_policy, fraction, face_mask)
            excluded += dist.n_excluded
            keep = dist.valid
            table = map_variability(dist.probs[keep], meta["identity"].to_numpy()[keep],
                                    None if face_fraction is None else face_fraction[keep], min_images)
            tables.append(table.assign(layer=layer, threshold=fraction))
    out = pd.concat(tables, ignore_index=True)
    gender = meta.drop_duplicates("identity").set_index("identity")["gender"]
    out["gender"] = out["identity"].map(gender).fillna("unknown")
    skipped = int((meta.groupby("identity").size() < max(min_images, 2)).sum())
    return MapVariability(out.assign(model=model)[PER_IDENTITY_COLUMNS], excluded, skipped)


def summarise_variability(per_identity: pd.DataFrame, share_cv: pd.DataFrame, threshold: float, n_boot: int,
                          seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary (mean CV with 95% CI, all and per gender) and female-vs-male tests of every measure.

    per_identity: map CVs (:data:`PER_IDENTITY_COLUMNS`); share_cv: :func:`share_variability` rows at the
    top-level ``threshold``. Measures ``map_cv``, ``map_cv_weighted`` (level ``map``) and ``share_cv``
    (level ``class``/``region``, per part) are keyed by model, layer, threshold, measure, level and part.
    """
    long_maps = per_identity.melt(id_vars=["model", "layer", "threshold", "identity", "gender"],
                                  value_vars=["map_cv", "map_cv_weighted"], var_name="measure", value_name="cv")
    long_maps["level"], long_maps["part"] = "map", ""
    long_shares = share_cv.assign(measure="share_cv", threshold=threshold)
    long_all = pd.concat([long_maps, long_shares[long_maps.columns]], ignore_index=True)
    keys = ["model", "layer", "threshold", "measure", "level", "part"]
    return summarize_by_gender(long_all, keys, "cv", n_boot=n_boot, seed=seed), gender_tests(long_all, keys, "cv")


def metrics_document(summary: pd.DataFrame, tests: pd.DataFrame, threshold: float, grid: int, negative_policy: str,
                     face_region: str) -> dict:
    """metrics/variability.json: per model and layer, mean map CV (top-t and full, all/female/male, with the
    female-vs-male p) and the mean share CV per part; ``grid``/``negative_policy`` are the similarity recipe."""
    doc: dict = {"threshold": threshold, "grid": grid, "negative_policy": negative_policy, "face_region": face_region,
                 "cv": "sample std (ddof=1) / mean across a person's images", "models": {}}
    for (model, layer), rows in summary.groupby(["model", "layer"], sort=False):
        entry: dict = {}
        for measure, fraction, name in (("map_cv", threshold, "map_cv_top"), ("map_cv", 1.0, "map_cv_full"),
                                        ("map_cv_weighted", threshold, "map_cv_weighted_top")):
            part = rows[(rows.measure == measure) & np.isclose(rows.threshold, fraction)].set_index("gender")
            entry[name] = {g: {"mean": part.loc[g, "mean"], "ci": [part.loc[g, "ci_low"], part.loc[g, "ci_high"]],
                               "n": int(part.loc[g, "n"])} for g in ("all", "female", "male") if g in part.index}
            test = tests[(tests.model == model) & (tests.layer == layer) & (tests.measure == measure)
                         & np.isclose(tests.threshold, fraction)]
            if not test.empty:
                entry[name]["female_vs_male_p"] = test.iloc[0].p_value
        shares = rows[(rows.measure == "share_cv") & (rows.gender == "all")]
        for level, part in shares.groupby("level"):
            entry[f"share_cv_{level}"] = {r["part"]: r["mean"] for _, r in part.iterrows() if np.isfinite(r["mean"])}
        doc["models"].setdefault(model, {})[layer] = entry
    return doc
