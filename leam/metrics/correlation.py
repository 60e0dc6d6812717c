"""Where do LEAM maps put their mass? Shares of the most relevant pixels in each face-parsing class.

For one image, one map (a layer or ``overall``) and a threshold ``t``:

* ``t < 1``: the top ``k = top_count(t, P)`` cells of the map's ``P = G * G`` cells (``leam.topt``:
  round half up of t * P, at least 1; ties to the earlier cell in row-major order), each weighted
  equally.
* ``t == 1``: every cell weighted by its activation (negative values clipped to 0), i.e. the map read as
  a distribution over the frame.

The share of class ``c`` is the weighted fraction of those cells' area that the parser labels ``c``.
Labels live at the frame size S, maps at the store grid G <= S: rather than taking a mode (which needs
tie rules and loses thin parts such as brows), each map cell gets the exact fraction of its label pixels
per class (a label pixel belongs to the cell that contains its centre). ``not_labelled`` (255) is a
class of its own, so the shares over all classes sum to 1 for every image, map and threshold.

Maps that are all zero or contain non-finite values get NaN shares and are counted, never ranked.
Everything is batched: one-hot fractions come from one ``bincount``, shares from batched matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from leam.errors import LeamError
from leam.metrics.stats import summarize
from leam.parsing.classes import CLASSES, NOT_LABELLED, NOT_LABELLED_NAME, REGIONS, check_canonical
from leam.topt import pixel_ranks, top_count

PARTS: tuple[str, ...] = (*CLASSES, NOT_LABELLED_NAME)
"""Share columns: the 19 canonical classes, then not-labelled (index 19)."""
NUM_PARTS = len(PARTS)
HEADLINE_REGIONS = ("nose", "eyes", "brows", "mouth", "skin")

__all__ = ["HEADLINE_REGIONS", "NUM_PARTS", "PARTS", "Correlation", "class_shares", "correlate_models",
           "label_fractions", "metrics_document", "region_shares", "summarise_shares", "tidy_shares"]


def label_fractions(labels: np.ndarray, grid: int, chunk: int = 64) -> np.ndarray:
    """Per map cell, the fraction of its label pixels in each part: (N, S, S) uint8 -> (N, G*G, 20) float32."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[1] != labels.shape[2]:
        raise LeamError(f"labels must have shape (N, S, S), got {labels.shape}")
    size = labels.shape[1]
    if not 0 < grid <= size:
        raise LeamError(f"map grid {grid} must be between 1 and the label size {size}")
    bad = check_canonical(labels)
    if bad.size:
        raise LeamError(f"labels contain unknown class ids {bad[:10].tolist()}; valid: 0..{len(CLASSES) - 1} and {NOT_LABELLED}")
    centre_cell = np.minimum(((np.arange(size) + 0.5) * grid / size).astype(np.int64), grid - 1)
    cell = (centre_cell[:, None] * grid + centre_cell[None, :]).reshape(-1)        # (S*S,)
    lut = np.full(256, NUM_PARTS - 1, dtype=np.int64)
    lut[:len(CLASSES)] = np.arange(len(CLASSES))
    cells = grid * grid
    out = np.empty((labels.shape[0], cells, NUM_PARTS), dtype=np.float32)
    for start in range(0, labels.shape[0], chunk):
        block = labels[start:start + chunk].reshape(-1, size * size)
        n = block.shape[0]
        index = (np.arange(n)[:, None] * cells + cell[None, :]) * NUM_PARTS + lut[block]
        counts = np.bincount(index.reshape(-1), minlength=n * cells * NUM_PARTS).reshape(n, cells, NUM_PARTS)
        out[start:start + n] = counts / counts.sum(axis=2, keepdims=True)
    return out


def class_shares(maps: np.ndarray, fractions: np.ndarray, thresholds: list[float],
                 chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Shares (N, L, T, 20) float64 and validity (N, L) bool for maps (N, L, G, G) and fractions (N, G*G, 20)."""
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise LeamError(f"maps must have shape (N, L, G, G), got {maps.shape}")
    n, layers, grid, _ = maps.shape
    cells = grid * grid
    if fractions.shape != (n, cells, NUM_PARTS):
        raise LeamError(f"label fractions {fractions.shape} do not match maps {maps.shape} (need ({n}, {cells}, {NUM_PARTS}))")
    counts = [top_count(t, cells) if t < 1 else 0 for t in thresholds]
    shares = np.full((n, layers, len(thresholds), NUM_PARTS), np.nan)
    valid = np.zeros((n, layers), dtype=bool)
    for start in range(0, n, chunk):
        values = maps[start:start + chunk].reshape(-1, layers, cells).astype(np.float32)
        frac = fractions[start:start + chunk]
        finite = np.isfinite(values).all(axis=2)
        weights_all = np.where(np.isfinite(values), np.clip(values, 0, None), 0)
        totals = weights_all.sum(axis=2)
        ok = finite & (totals > 0)
        valid[start:start + values.shape[0]] = ok
        rank = pixel_ranks(values.reshape(-1, grid, grid)).reshape(values.shape)  # one sort, every threshold
        for ti, (threshold, k) in enumerate(zip(thresholds, counts)):
            if threshold >= 1:
                weights = weights_all / np.where(totals > 0, totals, 1)[..., None]
            else:
                weights = (rank < k).astype(np.float32) / k
            part = np.matmul(weights, frac)                                           # (n, L, 20)
            shares[start:start + values.shape[0], :, ti] = np.where(ok[..., None], part, np.nan)
    return shares, valid


def region_shares(shares: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Sum class shares (..., 20) into regions (..., R + 1); the last column stays not-labelled."""
    names = [*REGIONS, NOT_LABELLED_NAME]
    matrix = np.zeros((NUM_PARTS, len(names)))
    for column, members in enumerate(REGIONS.values()):
        for name in members:
            matrix[PARTS.index(name), column] = 1.0
    matrix[NUM_PARTS - 1, -1] = 1.0
    return shares @ matrix, names


def tidy_shares(shares: np.ndarray, area: np.ndarray, meta: pd.DataFrame, model: str, layers: list[str],
                thresholds: list[float], keep_classes: list[str]) -> pd.DataFrame:
    """Long table: one row per (image, layer, threshold, level, part) with ``share`` and ``area``.

    ``level`` is ``class`` (the kept canonical classes + not_labelled) or ``region``; ``area`` is the
    part's fraction of the frame (the share a uniform map would give), used for enrichment.
    """
    regions, region_names = region_shares(shares)
    region_area, _ = region_shares(area)
    keep = [PARTS.index(name) for name in (*keep_classes, NOT_LABELLED_NAME)]
    blocks = [("class", shares[..., keep], area[:, keep], [PARTS[i] for i in keep]),
              ("region", regions, region_area, region_names)]
    n, n_layers, n_thresholds = shares.shape[:3]
    frames = []
    for level, values, areas, names in blocks:
        parts = len(names)
        index = np.indices((n, n_layers, n_thresholds, parts)).reshape(4, -1)
        frames.append(pd.DataFrame({
            "model": model,
            "layer": np.asarray(layers, dtype=object)[index[1]],
            "threshold": np.asarray(thresholds)[index[2]],
            "image_id": meta["image_id"].to_numpy()[index[0]],
            "identity": meta["identity"].to_numpy()[index[0]],
            "gender": meta["gender"].to_numpy()[index[0]],
            "level": level,
            "part": np.asarray(names, dtype=object)[index[3]],
            "share": values.reshape(-1),
            "area": areas[index[0], index[3]],
        }))
    table = pd.concat(frames, ignore_index=True)
    return table[np.isfinite(table["share"])].reset_index(drop=True)


def summarise_shares(per_image: pd.DataFrame, n_boot: int, seed: int) -> dict[str, pd.DataFrame]:
    """Summary tables: over images, by gender, by identity, and enrichment (share / area)."""
    keys = ["model", "layer", "threshold", "level", "part"]
    summary = summarize(per_image, keys, "share", n_boot=n_boot, seed=seed)
    by_gender = summarize(per_image, ["model", "layer", "threshold", "gender", "level", "part"], "share",
                          n_boot=n_boot, seed=seed)
    by_identity = (per_image.groupby(["model", "layer", "threshold", "identity", "gender", "level", "part"],
                                     sort=True)["share"].agg(n="count", mean="mean", std="std").reset_index())
    enrichment = per_image.groupby(keys, sort=True).agg(mean_share=("share", "mean"), mean_area=("area", "mean"),
                                                         n=("share", "count")).reset_index()
    with np.errstate(divide="ignore", invalid="ignore"):
        enrichment["enrichment"] = np.where(enrichment["mean_area"] > 0,
                                            enrichment["mean_share"] / enrichment["mean_area"], np.nan)
    return {"shares_summary": summary, "shares_by_gender": by_gender, "shares_by_identity": by_identity,
            "enrichment": enrichment}


def metrics_document(summary: pd.DataFrame, threshold: float, counts: dict) -> dict:
    """Small JSON for DVC: per model/layer class shares at ``threshold``; headline regions of ``overall``."""
    at = summary[np.isclose(summary["threshold"], threshold)]
    shares: dict = {}
    headline: dict = {}
    for (model, layer, level), group in at.groupby(["model", "layer", "level"], sort=False):
        values = {part: round(float(mean), 4) for part, mean in zip(group["part"], group["mean"])}
        if level == "class":
            shares.setdefault(model, {})[layer] = values
        elif layer == "overall":
            headline[model] = {region: values.get(region, float("nan")) for region in (*HEADLINE_REGIONS, NOT_LABELLED_NAME)}
    return {"threshold": threshold, "headline": headline, "shares": shares, "counts": counts}


@dataclass
class Correlation:
    """Shares of every model: ``per_image`` (:func:`tidy_shares` rows of all models), ``exclusions`` (model,
    layer, image_id, reason: ``no_parser_labels`` for a whole image (layer ``*``), ``map_without_mass`` for
    one map) and ``counts`` per model (images, no_parser_labels, maps_without_mass, layers)."""

    per_image: pd.DataFrame
    exclusions: pd.DataFrame
    counts: dict = field(default_factory=dict)


def correlate_models(outputs: Iterable[tuple[str, np.ndarray, dict, pd.DataFrame]], labels: np.ndarray,
                     parsing_index: pd.DataFrame, thresholds: list[float], keep_classes: list[str]) -> Correlation:
    """Class shares of each model's maps, over the images the parser labelled.

    ``outputs`` yields ``(model, maps (N, L, G, G), layers.json document, meta.csv)`` per model (the leam
    stage's outputs, ``leam.io.read_leam_outputs``); ``labels`` (M, S, S) and ``parsing_index`` (``image_id,
    row, parsed``) are the parse stage's. Images are matched by ``image_id``; a model with no labelled
    image is an error (LEAM and parser outputs from different aligned sets). Label fractions are computed
    once per (images, grid), since models share photos and grid.
    """
    parsed = parsing_index.parsed.astype(bool)
    parsed_row = dict(zip(parsing_index.image_id[parsed], parsing_index.row[parsed]))
    tables, exclusions, counts = [], [], {}
    fractions_of: dict[tuple[bytes, int], np.ndarray] = {}
    for model, maps, layer_info, meta in outputs:
        layers = list(layer_info["layers"])
        has_labels = meta.image_id.map(lambda image_id: image_id in parsed_row).to_numpy(dtype=bool)
        if not has_labels.any():
            raise LeamError(f"no image of model {model!r} has parser labels; do data/leam and data/parsing "
                            f"come from the same aligned set?")
        keep = np.flatnonzero(has_labels)
        rows = np.array([parsed_row[image_id] for image_id in meta.image_id[keep]], dtype=np.int64)
        key = (rows.tobytes(), int(maps.shape[2]))
        if key not in fractions_of:
            fractions_of[key] = label_fractions(np.asarray(labels[rows]), maps.shape[2])
        fractions = fractions_of[key]
        shares, valid = class_shares(np.asarray(maps[keep]), fractions, thresholds)
        tables.append(tidy_shares(shares, fractions.mean(axis=1), meta.iloc[keep], model, layers, thresholds,
                                  keep_classes))
        exclusions.append(pd.DataFrame({"model": model, "layer": "*", "image_id": meta.image_id[~has_labels],
                                        "reason": "no_parser_labels"}))
        bad_image, bad_layer = np.nonzero(~valid)
        exclusions.append(pd.DataFrame({"model": model, "layer": np.asarray(layers)[bad_layer],
                                        "image_id": meta.image_id.to_numpy()[keep][bad_image],
                                        "reason": "map_without_mass"}))
        counts[model] = {"images": int(len(keep)), "no_parser_labels": int((~has_labels).sum()),
                         "maps_without_mass": int((~valid).sum()), "layers": layers}
    return Correlation(pd.concat(tables, ignore_index=True), pd.concat(exclusions, ignore_index=True), counts)
