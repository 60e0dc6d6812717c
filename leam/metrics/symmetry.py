"""Left/right symmetry of LEAM maps: does a map favour one side of aligned, roughly symmetric faces?

Two measurements, each per network, layer and placement (``leam.placement``):

- **L/R mass ratio** of a region pair: the mean over images of the share of the top-t pixels that fall
  in the subject's left part, divided by the mean share in the right part (eyes, brows, mouth halves and
  face halves). Mouth and face are split at the facial midline, the mean x of the nose-bridge landmarks
  27-30. 1 is symmetric; the sides are the subject's (subject's left = image right).
- **Flip bias**: for a face and its mirror image (mirrored pixels *and* relabelled landmarks, so the
  model sees a plausible face), half the difference between the horizontal mass centroid of the face's
  map and that of the mirror's map mirrored back, in analysis-frame pixels. A placement that puts cells
  where they look gives 0 for every network, whatever the face; a drift towards one side shows as a
  bias of that sign (positive = towards the image right).

:func:`model_symmetry` runs one network on a seeded subset of photos and their mirror images under every
placement and measures both per image; :func:`summarise_symmetry` and :func:`symmetry_metrics` make the
``symmetry`` stage's summary and JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from leam import core
from leam.device import resolve_batch_size
from leam.embedding import embed_frames, reference_embeddings
from leam.errors import LeamError
from leam.metrics.stats import bootstrap_ci
from leam.parsing.classes import CLASS_ID
from leam.placement import PLACEMENTS
from leam.topt import top_fraction_mask

if TYPE_CHECKING:  # annotations only
    from leam.config import LeamParams
    from leam.models.spec import ModelSpec

__all__ = ["MIRROR_68", "PAIRS", "mirror_faces", "region_sides", "side_shares", "horizontal_centroid",
           "model_symmetry", "summarise_symmetry", "symmetry_metrics"]

MIRROR_68 = np.array(
    list(range(16, -1, -1))                      # jaw 0..16
    + list(range(26, 21, -1)) + list(range(21, 16, -1))   # brows 17..21 <-> 26..22
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]    # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60] + [67, 66, 65])       # inner lips
"""Index permutation of dlib's 68 landmarks under a horizontal mirror (point k of the mirror = point MIRROR_68[k])."""

FACE_CLASSES = ("skin", "nose", "left_eye", "right_eye", "left_brow", "right_brow", "upper_lip", "lower_lip",
                "inner_mouth")
MOUTH_CLASSES = ("upper_lip", "lower_lip", "inner_mouth")
PAIRS = ("eyes", "brows", "mouth", "face")


def mirror_faces(frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror analysis frames (N, S, S, 3) and their landmarks (N, 68, 2): x -> S - 1 - x, points relabelled."""
    size = frames.shape[2]
    mirrored = np.ascontiguousarray(np.asarray(frames)[:, :, ::-1])
    points = np.asarray(landmarks, dtype=np.float64).copy()
    points[..., 0] = size - 1 - points[..., 0]
    return mirrored, points[:, MIRROR_68]


def region_sides(labels: np.ndarray, landmarks: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Boolean (N, S, S) masks of each pair's (subject's left, subject's right) part from parser labels.

    labels: (N, S, S) canonical class ids in the analysis frame; landmarks: (N, 68, 2) frame pixels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.shape[0] != len(landmarks):
        raise LeamError(f"labels {labels.shape} do not match {len(landmarks)} landmark sets")
    size = labels.shape[-1]
    midline = np.asarray(landmarks)[:, 27:31, 0].mean(axis=1)
    image_right = np.arange(size)[None, None, :] > midline[:, None, None]  # subject's left side
    image_left = np.arange(size)[None, None, :] < midline[:, None, None]

    def of(names) -> np.ndarray:
        return np.isin(labels, [CLASS_ID[name] for name in names])

    mouth, face = of(MOUTH_CLASSES), of(FACE_CLASSES)
    return {
        "eyes": (labels == CLASS_ID["left_eye"], labels == CLASS_ID["right_eye"]),
        "brows": (labels == CLASS_ID["left_brow"], labels == CLASS_ID["right_brow"]),
        "mouth": (mouth & image_right, mouth & image_left),
        "face": (face & image_right, face & image_left),
    }


def side_shares(selected: torch.Tensor, sides: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Share of each map's selected mass on each side: selected (N, L, S, S) -> {pair: (N, L, 2)} (left, right).

    ``selected`` is a top-t mask (as float) or a non-negative map; shares are of the map's total mass.
    """
    total = selected.sum(dim=(-2, -1)).clamp_min(torch.finfo(selected.dtype).tiny)
    out = {}
    for pair, (left, right) in sides.items():
        parts = [(selected * torch.as_tensor(mask, dtype=selected.dtype)[:, None]).sum(dim=(-2, -1)) / total
                 for mask in (left, right)]
        out[pair] = torch.stack(parts, dim=-1).numpy()
    return out


def horizontal_centroid(maps: torch.Tensor) -> torch.Tensor:
    """Mass-weighted mean column (frame pixels) of non-negative maps (N, L, S, S) -> (N, L); NaN without mass."""
    columns = torch.arange(maps.shape[-1], dtype=maps.dtype, device=maps.device)
    mass = maps.sum(dim=(-2, -1))
    centroid = (maps.sum(dim=-2) * columns).sum(dim=-1) / mass
    return torch.where(mass > 0, centroid, torch.full_like(centroid, float("nan")))


def summarise_symmetry(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per (model, placement, layer): L/R ratios of mean shares and the mean flip bias, each with a 95% CI.

    per_image: one row per (model, placement, layer, image) with columns ``grid``, ``<pair>_left``,
    ``<pair>_right`` for every pair and ``flip_bias_px``. The ratio CI resamples images.
    """
    rows = []
    for (model, placement, layer), group in per_image.groupby(["model", "placement", "layer"], sort=False):
        row = {"model": model, "placement": placement, "layer": layer, "grid": int(group.grid.iloc[0]),
               "images": len(group)}
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(group), size=(n_boot, len(group)))
        for pair in PAIRS:
            left, right = group[f"{pair}_left"].to_numpy(), group[f"{pair}_right"].to_numpy()
            ratio = left.mean() / right.mean() if right.mean() > 0 else np.nan
            boot = left[draws].mean(axis=1) / np.where(right[draws].mean(axis=1) > 0, right[draws].mean(axis=1), np.nan)
            low, high = (np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan))
            row.update({f"{pair}_lr": ratio, f"{pair}_lr_low": low, f"{pair}_lr_high": high})
        bias = group.flip_bias_px.to_numpy()
        bias = bias[np.isfinite(bias)]
        row["flip_bias_px"] = float(bias.mean()) if len(bias) else np.nan
        row["flip_bias_low"], row["flip_bias_high"] = bootstrap_ci(bias, n_boot, seed) if len(bias) > 1 else (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def model_symmetry(model: nn.Module, spec: ModelSpec, layers: Sequence[str], frames: np.ndarray,
                   landmarks: np.ndarray, labels: np.ndarray, index: pd.DataFrame,
                   probe: tuple[np.ndarray, np.ndarray], cfg: LeamParams, *, padding: float, threshold: float,
                   seed: int, max_images: int, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Per-image symmetry rows of one network for every placement (see the module docstring).

    frames (N, S, S, 3) uint8, landmarks (N, 68, 2) frame pixels and labels (N, S, S) canonical class ids
    are the photos with parser labels, ``index`` their aligned index (row i = array row i); probe: the
    leam stage's probe photos (frames, landmarks), on which ``effective_field`` is measured. ``cfg`` is the
    ``leam`` params group (references, sign, negative activations, overall map, batch size); ``max_images``
    photos are drawn with ``seed``; ``threshold`` is the top-t fraction whose L/R shares are measured;
    ``device``: where the network runs (``symmetry.device``; the model is moved there, the maps come back).
    Columns: model, placement, layer, grid (cells a side, receptive_field; 0 for overall), image_id,
    flip_bias_px, ``<pair>_left``, ``<pair>_right`` for every pair of :data:`PAIRS`.
    """
    plan, _ = core.select_references(index, cfg.reference, cfg.baseline_index)
    rng = np.random.default_rng(seed)
    plan = plan.iloc[np.sort(rng.permutation(len(plan))[:max_images])].reset_index(drop=True)
    model = model.to(device)
    batch = resolve_batch_size(cfg.batch_size, device, lambda: 2 * core.pass_bytes(model, spec, layers, frames.shape[1]),
                               "leam.batch_size")  # two passes (photo, mirror) are alive at once
    needed = np.unique(np.concatenate([plan.row.to_numpy(), *map(np.asarray, plan.reference_rows)]))
    embeddings = torch.zeros((len(frames), spec.embedding_dim))  # only the rows the subset needs are filled
    embeddings[needed] = embed_frames(model, spec, frames[needed], landmarks[needed], padding, batch, device)
    references = reference_embeddings(F.normalize(embeddings, dim=1), plan.reference_rows)
    rows = plan.row.to_numpy()
    names = [*layers, "overall"]
    geometries = {placement: core.frame_geometries(model, spec, layers, placement, *probe, padding)
                  for placement in PLACEMENTS}  # measured once per model, as the leam stage does

    def maps_of(images, points, refs, placement) -> torch.Tensor:
        """Layer maps plus the overall map (N, L + 1, S, S) under one placement."""
        result = core.frame_leam_maps(model, spec, images, points, refs, layers, padding, cfg.sign,
                                      cfg.negative_activations, geometries[placement])
        return torch.cat([result.maps, core.overall_map(result.maps, cfg.overall)[:, None]], dim=1).cpu()

    out = []
    for start in tqdm(range(0, len(rows), batch), desc=f"symmetry {spec.name}", unit="batch"):
        chunk, refs = rows[start:start + batch], references[start:start + batch]
        sides = region_sides(labels[chunk], landmarks[chunk])
        mirrored, mirrored_points = mirror_faces(frames[chunk], landmarks[chunk])
        for placement in PLACEMENTS:
            maps = maps_of(frames[chunk], landmarks[chunk], refs, placement)
            flipped_back = maps_of(mirrored, mirrored_points, refs, placement).flip(-1)
            bias = ((horizontal_centroid(maps) - horizontal_centroid(flipped_back)) / 2).numpy()
            n, count, size = maps.shape[0], maps.shape[1], maps.shape[-1]
            top = top_fraction_mask(maps.reshape(n * count, size, size), threshold).reshape(maps.shape)
            shares = side_shares(top.to(torch.float32), sides)
            for i, row in enumerate(chunk):
                for j, layer in enumerate(names):
                    record = {"model": spec.name, "placement": placement, "layer": layer,
                              "image_id": index.image_id[row], "flip_bias_px": float(bias[i, j])}
                    for pair in PAIRS:
                        record[f"{pair}_left"], record[f"{pair}_right"] = shares[pair][i, j]
                    out.append(record)
    frame = pd.DataFrame(out)
    grids = {layer: geometry.grid[0] for layer, geometry in geometries["receptive_field"].items()}
    frame.insert(3, "grid", frame.layer.map(grids).fillna(0).astype(int))
    return frame


def symmetry_metrics(summary: pd.DataFrame, threshold: float) -> dict:
    """metrics/symmetry.json: per model, placement and layer the L/R ratios and the flip bias (rounded to 3 places)."""
    document: dict = {"threshold": threshold, "models": {}}
    for row in summary.itertuples(index=False):
        entry = {"grid": row.grid, "images": row.images, "flip_bias_px": round(row.flip_bias_px, 3)}
        for pair in PAIRS:
            entry[f"{pair}_lr"] = round(float(getattr(row, f"{pair}_lr")), 3)
        document["models"].setdefault(row.model, {}).setdefault(row.placement, {})[row.layer] = entry
    return document
