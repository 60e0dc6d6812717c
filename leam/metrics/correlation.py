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
from functools import cached_property
from typing import Iterable, Iterator

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

__all__ = ["COMPARISON_COLUMNS", "HEADLINE_REGIONS", "NUM_PARTS", "PARTS", "Correlation", "LabelFractions",
           "ParserReference", "class_shares", "compare_parsers", "comparison_document", "correlate_models",
           "iter_correlations", "label_fractions", "metrics_document", "paired_class_shares", "region_shares",
           "summarise_shares", "tidy_shares"]


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


class LabelFractions:
    """:func:`label_fractions` of a label set's ``rows``, (N, G*G, 20) float32, sliced by images (``[start:stop]``).

    Kept in memory when they fit ``max_bytes`` (the default run: 850 MB, computed once for every model);
    beyond it (the paper's 20,000 photos: 20 GB) each slice is computed when asked for, so memory stays at one
    chunk of images. :attr:`area` (N, 20) is their mean over the cells, each part's share of the frame,
    computed on first use (the reference parser's is never asked for).
    """

    def __init__(self, labels: np.ndarray, rows: np.ndarray, grid: int, max_bytes: int = 2 * 1024 ** 3,
                 chunk: int = 64) -> None:
        self.labels, self.rows, self.grid, self.chunk = labels, np.asarray(rows, dtype=np.int64), int(grid), chunk
        self.shape = (len(self.rows), self.grid * self.grid, NUM_PARTS)
        fits = 4 * int(np.prod(self.shape)) <= max_bytes
        self._all = label_fractions(np.asarray(labels[self.rows]), self.grid) if fits else None

    @cached_property
    def area(self) -> np.ndarray:
        if self._all is not None:
            return self._all.mean(axis=1)
        parts = [self[start:start + self.chunk].mean(axis=1) for start in range(0, len(self), self.chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, NUM_PARTS), dtype=np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, images: slice) -> np.ndarray:
        if not isinstance(images, slice):
            raise TypeError("LabelFractions are sliced by images, e.g. fractions[0:32]")
        if self._all is not None:
            return self._all[images]
        return label_fractions(np.asarray(self.labels[self.rows[images]]), self.grid)


def class_shares(maps: np.ndarray, fractions: np.ndarray, thresholds: list[float],
                 chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Shares (N, L, T, 20) float64 and validity (N, L) bool for maps (N, L, G, G) and fractions (N, G*G, 20)."""
    shares, valid = _shares_of_sets(maps, [(fractions, list(range(len(thresholds))))], thresholds, chunk)
    return shares[0], valid


def paired_class_shares(maps: np.ndarray, fractions: np.ndarray, reference: np.ndarray, thresholds: list[float],
                        at: float, chunk: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two parsers' shares from the same top-t cells (one ranking serves both).

    ``fractions`` and ``reference`` (N, G*G, 20) are two label sets of the same images; returns the
    :func:`class_shares` of ``fractions`` (N, L, T, 20) at every threshold, those of ``reference`` (N, L, 20) at
    threshold ``at`` (one of ``thresholds``) only, and the validity (N, L).
    """
    matches = [i for i, t in enumerate(thresholds) if np.isclose(t, at)]
    if not matches:
        raise LeamError(f"comparison threshold {at} is not one of the thresholds {thresholds}")
    shares, valid = _shares_of_sets(maps, [(fractions, list(range(len(thresholds)))), (reference, matches[:1])],
                                    thresholds, chunk)
    return shares[0], shares[1][:, :, 0], valid


def _shares_of_sets(maps: np.ndarray, sets: list[tuple[np.ndarray, list[int]]], thresholds: list[float],
                    chunk: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Shares of several label fraction sets (N, G*G, 20), each at its threshold indices, and the validity (N, L)."""
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise LeamError(f"maps must have shape (N, L, G, G), got {maps.shape}")
    n, layers, grid, _ = maps.shape
    cells = grid * grid
    for fractions, _ in sets:
        if fractions.shape != (n, cells, NUM_PARTS):
            raise LeamError(f"label fractions {fractions.shape} do not match maps {maps.shape} "
                            f"(need ({n}, {cells}, {NUM_PARTS}))")
    counts = [top_count(t, cells) if t < 1 else 0 for t in thresholds]
    outs = [np.full((n, layers, len(wanted), NUM_PARTS), np.nan) for _, wanted in sets]
    valid = np.zeros((n, layers), dtype=bool)
    for start in range(0, n, chunk):
        values = maps[start:start + chunk].reshape(-1, layers, cells).astype(np.float32)
        stop = start + values.shape[0]
        finite = np.isfinite(values).all(axis=2)
        weights_all = np.where(np.isfinite(values), np.clip(values, 0, None), 0)
        totals = weights_all.sum(axis=2)
        ok = finite & (totals > 0)
        valid[start:stop] = ok
        rank = pixel_ranks(values.reshape(-1, grid, grid)).reshape(values.shape)  # one sort, every threshold
        for ti, (threshold, k) in enumerate(zip(thresholds, counts)):
            users = [(out, wanted.index(ti), fractions) for out, (fractions, wanted) in zip(outs, sets) if ti in wanted]
            if not users:
                continue
            if threshold >= 1:
                weights = weights_all / np.where(totals > 0, totals, 1)[..., None]
            else:
                weights = (rank < k).astype(np.float32) / k
            for out, column, fractions in users:
                part = np.matmul(weights, fractions[start:stop])                      # (n, L, 20)
                out[start:stop, :, column] = np.where(ok[..., None], part, np.nan)
    return outs, valid


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
class ParserReference:
    """A second parser's labels of the same aligned rows (the parse stage's ``reference_labels.npy``), whose
    shares are computed from the same top-t cells at ``threshold`` (the top-level ``threshold``)."""

    backend: str               # the reference parser, e.g. ``landmarks``
    labels: np.ndarray         # (M, S, S) uint8 canonical ids, rows as the parsing index
    parsed: np.ndarray         # (M,) bool: the reference labelled the face
    threshold: float           # top-t fraction of the comparison
    classes: list[str]         # classes listed at class level (those either parser produces)


@dataclass
class Correlation:
    """Shares of every model: ``per_image`` (:func:`tidy_shares` rows of all models), ``exclusions`` (model,
    layer, image_id, reason: ``no_parser_labels`` for a whole image (layer ``*``), ``map_without_mass`` for
    one map) and ``counts`` per model (images, no_parser_labels, maps_without_mass, layers). With a
    :class:`ParserReference`, ``comparison`` holds per image, at its threshold, the share under both parsers
    (:func:`tidy_shares` rows with ``reference_share``) over the faces both labelled; else it is None.
    :func:`iter_correlations` yields one model's at a time (``counts`` then holds that model only)."""

    per_image: pd.DataFrame
    exclusions: pd.DataFrame
    counts: dict = field(default_factory=dict)
    comparison: pd.DataFrame | None = None


def iter_correlations(outputs: Iterable[tuple[str, np.ndarray, dict, pd.DataFrame]], labels: np.ndarray,
                      parsing_index: pd.DataFrame, thresholds: list[float], keep_classes: list[str],
                      reference: ParserReference | None = None) -> Iterator[Correlation]:
    """Class shares of each model's maps, over the images the parser labelled: one :class:`Correlation` per model.

    ``outputs`` yields ``(model, maps (N, L, G, G), layers.json document, meta.csv)`` per model (the leam
    stage's outputs, ``leam.io.read_leam_outputs``); ``labels`` (M, S, S) and ``parsing_index`` (``image_id,
    row, parsed``) are the parse stage's. Images are matched by ``image_id``; a model with no labelled
    image is an error (LEAM and parser outputs from different aligned sets). Label fractions are computed
    once per (images, grid) (:class:`LabelFractions`), since models share photos and grid. ``reference`` adds
    the shares under a second parser's labels (:func:`paired_class_shares`: no second ranking) on the images
    both labelled. One model at a time, so that a caller can summarise and write each before the next: the
    per-image rows of every model at once would not fit in memory at the paper's scale.
    """
    parsed = parsing_index.parsed.astype(bool)
    parsed_row = dict(zip(parsing_index.image_id[parsed], parsing_index.row[parsed]))
    fractions_of: dict[tuple[str, bytes, int], LabelFractions] = {}

    def fractions_for(name: str, source: np.ndarray, rows: np.ndarray, grid: int) -> LabelFractions:
        key = (name, rows.tobytes(), grid)
        if key not in fractions_of:
            fractions_of[key] = LabelFractions(source, rows, grid)
        return fractions_of[key]

    for model, maps, layer_info, meta in outputs:
        layers = list(layer_info["layers"])
        has_labels = meta.image_id.map(lambda image_id: image_id in parsed_row).to_numpy(dtype=bool)
        if not has_labels.any():
            raise LeamError(f"no image of model {model!r} has parser labels; do data/leam and data/parsing "
                            f"come from the same aligned set?")
        keep = np.flatnonzero(has_labels)
        rows = np.array([parsed_row[image_id] for image_id in meta.image_id[keep]], dtype=np.int64)
        grid = int(maps.shape[2])
        fractions = fractions_for("labels", labels, rows, grid)
        kept_maps = maps if len(keep) == len(maps) else np.asarray(maps[keep])  # a memmap stays on disk, read by chunks
        comparison = None
        if reference is None:
            shares, valid = class_shares(kept_maps, fractions, thresholds)
        else:
            both = np.asarray(reference.parsed, dtype=bool)[rows]
            reference_fractions = fractions_for("reference", reference.labels, rows, grid)
            shares, reference_shares, valid = paired_class_shares(kept_maps, fractions,
                                                                  reference_fractions, thresholds, reference.threshold)
            at = next(i for i, t in enumerate(thresholds) if np.isclose(t, reference.threshold))
            area = fractions.area[both]
            main = tidy_shares(shares[both][:, :, at:at + 1], area, meta.iloc[keep[both]], model, layers,
                               [reference.threshold], reference.classes)
            other = tidy_shares(reference_shares[both][:, :, None], area, meta.iloc[keep[both]], model, layers,
                                [reference.threshold], reference.classes)
            comparison = main.drop(columns="area").assign(reference_share=other["share"].to_numpy())
        per_image = tidy_shares(shares, fractions.area, meta.iloc[keep], model, layers, thresholds, keep_classes)
        bad_image, bad_layer = np.nonzero(~valid)
        exclusions = pd.concat([
            pd.DataFrame({"model": model, "layer": "*", "image_id": meta.image_id[~has_labels],
                          "reason": "no_parser_labels"}),
            pd.DataFrame({"model": model, "layer": np.asarray(layers)[bad_layer],
                          "image_id": meta.image_id.to_numpy()[keep][bad_image], "reason": "map_without_mass"})],
            ignore_index=True)
        counts = {"images": int(len(keep)), "no_parser_labels": int((~has_labels).sum()),
                  "maps_without_mass": int((~valid).sum()), "layers": layers}
        if reference is not None:
            counts["compared_images"] = int(both.sum())
        yield Correlation(per_image, exclusions, {model: counts}, comparison)


def correlate_models(outputs: Iterable[tuple[str, np.ndarray, dict, pd.DataFrame]], labels: np.ndarray,
                     parsing_index: pd.DataFrame, thresholds: list[float], keep_classes: list[str],
                     reference: ParserReference | None = None) -> Correlation:
    """:func:`iter_correlations` of every model in one :class:`Correlation` (the models' rows concatenated)."""
    parts = list(iter_correlations(outputs, labels, parsing_index, thresholds, keep_classes, reference))
    counts = {model: entry for part in parts for model, entry in part.counts.items()}
    comparison = pd.concat([p.comparison for p in parts], ignore_index=True) if reference is not None else None
    return Correlation(pd.concat([p.per_image for p in parts], ignore_index=True),
                       pd.concat([p.exclusions for p in parts], ignore_index=True), counts, comparison)


COMPARISON_COLUMNS = ["model", "layer", "threshold", "level", "part", "n", "share", "reference_share", "difference",
                      "ci_low", "ci_high"]


def compare_parsers(comparison: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Mean share under the pipeline's parser and the reference parser per model/layer/level/part over the same
    faces, their ``difference`` (parser - reference) and the 95% bootstrap CI of the paired per-image difference
    (columns :data:`COMPARISON_COLUMNS`, the layers in the leam stage's order)."""
    keys = ["model", "layer", "threshold", "level", "part"]
    paired = comparison.assign(difference=comparison["share"] - comparison["reference_share"])
    summary = summarize(paired, keys, "difference", n_boot=n_boot, seed=seed).rename(columns={"mean": "difference"})
    means = paired.groupby(keys, sort=True).agg(share=("share", "mean"), reference_share=("reference_share", "mean"))
    order = comparison[keys].drop_duplicates()                      # models, layers and parts as the stage wrote them
    table = order.merge(summary, on=keys, how="left").merge(means.reset_index(), on=keys, how="left")
    return table[COMPARISON_COLUMNS].reset_index(drop=True)


def comparison_document(table: pd.DataFrame, backend: str, reference: str, counts: dict) -> dict:
    """``parser_comparison`` of metrics/correlation.json: per model the headline regions of the ``overall`` map
    under both parsers (share, reference, difference, 95% CI of the difference) and the faces compared."""
    overall = table[(table.layer == "overall") & (table.level == "region")]
    headline: dict = {}
    for model, group in overall.groupby("model", sort=False):
        rows = group.set_index("part")
        headline[model] = {region: {"share": round(float(rows.at[region, "share"]), 4),
                                    "reference": round(float(rows.at[region, "reference_share"]), 4),
                                    "difference": round(float(rows.at[region, "difference"]), 4),
                                    "ci": [round(float(rows.at[region, "ci_low"]), 4),
                                           round(float(rows.at[region, "ci_high"]), 4)]}
                           for region in (*HEADLINE_REGIONS, NOT_LABELLED_NAME) if region in rows.index}
    return {"parser": backend, "reference": reference, "threshold": float(table.threshold.iloc[0]) if len(table) else None,
            "images": {model: int(entry.get("compared_images", 0)) for model, entry in counts.items()},
            "headline": headline}
