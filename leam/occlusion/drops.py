"""Similarity drops: occlude each image under every mask of a design and embed it with the target models.

``drop = clean - occluded``, the cosine similarity to the image's LEAM reference of the clean frame minus
that of the occluded frame, under the *target* model. A :class:`Design` names the thresholds, the fill,
the random baselines and the LEAM guide maps per source model; :func:`occlusion_drops` returns one tidy
row per (target, source, map, threshold, kind, repeat, image). Occluded frames are embedded ``batch_size``
at a time, across masks and thresholds; :class:`Timing` counts the forward passes per target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from leam.embedding import frames_to_tensor, reference_embeddings
from leam.errors import LeamError, check_choice
from leam.occlusion.fills import FILLS, fill_values, occlude
from leam.occlusion.masks import RANDOM_KINDS, TopPixels, top_pixel_masks
from leam.occlusion.targets import Target, cosine
from leam.topt import check_fraction, top_count

__all__ = ["Design", "Timing", "occlusion_drops"]

_COLUMNS = ["source", "target", "map", "threshold", "kind", "repeat", "image", "clean", "occluded", "drop"]


@dataclass
class Design:
    """What to occlude: thresholds, fill, random baselines, and the guide maps per source model.

    ``guides[source][map_name]`` is a (N, G, G) array of raw LEAM maps aligned with the frames.
    """

    thresholds: list[float]
    fill: str
    random_kinds: list[str]
    random_repeats: int
    seed: int
    guides: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("occlusion.fill", self.fill, FILLS)
        for kind in self.random_kinds:
            check_choice("occlusion.random", kind, RANDOM_KINDS)
        if self.random_repeats < 0:
            raise LeamError(f"occlusion.random_repeats={self.random_repeats!r} must be >= 0")
        for t in self.thresholds:
            check_fraction(t, "occlusion.thresholds")


@dataclass
class Timing:
    """Forward-pass cost of one target model: number of forwards, images embedded, seconds spent."""

    forwards: int = 0
    images: int = 0
    seconds: float = 0.0

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / self.images if self.images else float("nan")


def _mask_plan(design: Design) -> list[tuple[str, str, str, int, tuple]]:
    """(source, map, kind, repeat, mask name of :class:`TopPixels`) of every mask, in the rows' order:
    the LEAM guides per source and map, then each random kind's repeats."""
    plan = [(source, map_name, "leam", 0, ("leam", source, map_name))
            for source, maps in design.guides.items() for map_name in maps]
    return plan + [("none", "none", f"random_{kind}", repeat, (f"random_{kind}", repeat))
                   for kind in design.random_kinds for repeat in range(design.random_repeats)]


def occlusion_drops(frames: np.ndarray, image_rows: np.ndarray, image_ids: Sequence[str],
                    reference_rows: Sequence[int | Sequence[int]], face_region: np.ndarray | None,
                    targets: Sequence[Target], design: Design, batch_size: int = 32,
                    device: torch.device | str = "cpu",
                    timings: dict[str, Timing] | None = None, masks: TopPixels | None = None) -> pd.DataFrame:
    """Similarity drops of every (target, source, map, threshold) LEAM mask and every random baseline.

    frames: uint8 (M, S, S, 3) analysis frames (all images, including references).
    image_rows: (N,) rows of ``frames`` to occlude; guide maps and ``face_region`` (N, S, S) follow this order.
    reference_rows: per occluded image, the frame row(s) of its LEAM reference (see ``leam.embedding.reference_embeddings``).
    Returns one row per (target, source, map, threshold, kind, repeat, image) with columns
    ``source, target, map, threshold, kind, repeat, image, clean, occluded, drop`` (``image`` = position in
    ``image_rows``). Random rows have source and map ``none``: they do not depend on a source model.

    Batching: ``batch_size`` images at a time; their clean frames are one forward pass per target, and
    every (mask, threshold) version of them is queued and embedded ``batch_size`` frames per forward pass
    (a full batch of images gives one pass per mask and threshold). Each mask is ranked once for all
    targets (``masks``, a :class:`TopPixels` of these images whose ``guides`` are ``design.guides``' arrays;
    built here when not given, shared across calls by ``run_experiment``), and each batch's warps into a
    target's input are computed once (``Target.input_grid``) for all of its occluded versions. Every pass
    has at least 16 rows (``leam.embedding``), so no value depends on ``batch_size`` or on how the versions
    fall into passes.
    """
    device = torch.device(device)
    size = frames.shape[1]
    image_rows = np.asarray(image_rows, dtype=np.int64)
    if any(kind in ("face", "blob") for kind in design.random_kinds) and design.random_repeats and face_region is None:
        raise LeamError("random face and blob baselines need a face region")
    counts = {t: top_count(t, size * size) for t in design.thresholds}
    plan = _mask_plan(design)
    if masks is None:
        masks = TopPixels(image_ids, size, max(counts.values(), default=1), design.seed, design.guides, face_region,
                          batch_size, device)
    for _, _, kind, _, name in plan:
        if kind == "leam" and masks.guides.get(name[1], {}).get(name[2]) is not design.guides[name[1]][name[2]]:
            raise LeamError(f"occlusion masks were ranked for other {name[2]!r} maps of {name[1]!r} than the design's")
    if plan and masks.count < max(counts.values(), default=1):
        raise LeamError(f"occlusion masks keep {masks.count} pixels, threshold {max(counts)} needs {max(counts.values())}")
    threshold_values, count_values = list(counts), list(counts.values())
    versions = [(m, t) for m in range(len(plan)) for t in range(len(counts))]  # (mask, threshold) per version
    version_mask = torch.tensor([m for m, _ in versions], dtype=torch.int64, device=device)
    version_count = torch.tensor([count_values[t] for _, t in versions], dtype=torch.int64, device=device)
    if face_region is not None:
        region_pixels = np.asarray(face_region).reshape(len(image_rows), -1).sum(axis=1)
    columns: dict[str, list] = {name: [] for name in _COLUMNS}
    for target in targets:
        target.module.to(device)
        timing = timings.setdefault(target.name, Timing()) if timings is not None else Timing()

        def timed(embed, *args) -> torch.Tensor:
            start = time.perf_counter()
            out = embed(*args)
            timing.seconds += time.perf_counter() - start
            timing.forwards += 1
            timing.images += out.shape[0]
            return out

        # Reference embeddings: clean frames of every row any reference needs.
        needed = sorted({int(r) for rows in reference_rows for r in ([rows] if np.isscalar(rows) else rows)})
        ref_clean = torch.zeros((0,))
        chunks = []
        for start in range(0, len(needed), batch_size):
            rows = np.asarray(needed[start:start + batch_size])
            chunks.append(timed(target.embed, frames_to_tensor(frames[rows], device), rows))
        if chunks:
            ref_clean = torch.cat(chunks)
        position = {row: i for i, row in enumerate(needed)}
        references = reference_embeddings(
            ref_clean, [[position[int(r)] for r in ([rows] if np.isscalar(rows) else rows)] for rows in reference_rows])
        orders = [masks.order(name) for *_, name in plan]

        for start in tqdm(range(0, len(image_rows), batch_size), desc=f"occlusion {target.name}", leave=False):
            stop = min(start + batch_size, len(image_rows))
            rows, n = image_rows[start:stop], stop - start
            batch = frames_to_tensor(frames[rows], device)
            ref = references[start:stop].to(device)
            clean = cosine(timed(target.embed, batch, rows), ref).cpu().numpy()
            fills = fill_values(batch, design.fill)
            grid = target.input_grid(rows, size, device)
            batch_orders = torch.from_numpy(np.stack([order[start:stop] for order in orders]).astype(np.int64)
                                            if orders else np.zeros((0, n, 1), dtype=np.int64)).to(device)
            occluded = torch.empty(len(versions) * n, dtype=torch.float32)
            for first in range(0, len(versions) * n, batch_size):  # frame f = image f % n under version f // n
                flat = torch.arange(first, min(first + batch_size, len(versions) * n), device=device)
                version, image = flat // n, flat % n
                occlude_masks = top_pixel_masks(batch_orders[version_mask[version], image], version_count[version], size)
                # a forward holding one whole version (a full batch) takes the batch's tensors as they are
                pick = slice(None) if len(flat) == n and first % n == 0 else image
                embedded = timed(target.embed_on_grid, occlude(batch[pick], occlude_masks, fills[pick]), grid[pick])
                occluded[first:first + len(flat)] = cosine(embedded, ref[pick]).cpu()
            occluded_np = occluded.numpy().reshape(len(versions), n)
            for (mask, t), values in zip(versions, occluded_np):
                source, map_name, kind, repeat, _ = plan[mask]
                if kind == "random_face":  # too small a face for the mask: NaN (counted by metrics_document)
                    values = np.where(region_pixels[start:stop] < count_values[t], np.nan, values)
                for column, value in (("target", target.name), ("source", source), ("map", map_name),
                                      ("threshold", threshold_values[t]), ("kind", kind), ("repeat", repeat)):
                    columns[column].append(np.full(n, value))
                columns["image"].append(np.arange(start, stop))
                columns["clean"].append(clean)
                columns["occluded"].append(values)
                columns["drop"].append(clean - values)
    if not columns["image"]:
        return pd.DataFrame(columns=_COLUMNS)
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})[_COLUMNS]
