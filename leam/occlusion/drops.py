"""Similarity drops: occlude each image under every mask of a design and embed it with the target models.

``drop = clean - occluded``, the cosine similarity to the image's LEAM reference of the clean frame minus
that of the occluded frame, under the *target* model. A :class:`Design` names the thresholds, the fill,
the random baselines and the LEAM guide maps per source model; :func:`occlusion_drops` returns one tidy
row per (target, source, map, threshold, kind, repeat, image). Each batch of occluded images is one
forward pass per target; :class:`Timing` counts them.
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
from leam.occlusion.masks import RANDOM_KINDS, random_blob_scores, random_scores, upsample_maps
from leam.occlusion.targets import Target, cosine
from leam.topt import check_fraction, pixel_ranks, top_count

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


def occlusion_drops(frames: np.ndarray, image_rows: np.ndarray, image_ids: Sequence[str],
                    reference_rows: Sequence[int | Sequence[int]], face_region: np.ndarray | None,
                    targets: Sequence[Target], design: Design, batch_size: int = 32,
                    device: torch.device | str = "cpu",
                    timings: dict[str, Timing] | None = None) -> pd.DataFrame:
    """Similarity drops of every (target, source, map, threshold) LEAM mask and every random baseline.

    frames: uint8 (M, S, S, 3) analysis frames (all images, including references).
    image_rows: (N,) rows of ``frames`` to occlude; guide maps and ``face_region`` (N, S, S) follow this order.
    reference_rows: per occluded image, the frame row(s) of its LEAM reference (see ``leam.embedding.reference_embeddings``).
    Returns one row per (target, source, map, threshold, kind, repeat, image) with columns
    ``source, target, map, threshold, kind, repeat, image, clean, occluded, drop`` (``image`` = position in
    ``image_rows``). Random rows have source and map ``none``: they do not depend on a source model.
    Each batch of occluded images is one forward pass per target.
    """
    device = torch.device(device)
    size = frames.shape[1]
    image_rows = np.asarray(image_rows, dtype=np.int64)
    if any(kind in ("face", "blob") for kind in design.random_kinds) and design.random_repeats and face_region is None:
        raise LeamError("random face and blob baselines need a face region")
    counts = {t: top_count(t, size * size) for t in design.thresholds}
    if face_region is not None:
        region_pixels = np.asarray(face_region).reshape(len(image_rows), -1).sum(axis=1)
    records: list[pd.DataFrame] = []
    for target in targets:
        target.module.to(device)
        timing = timings.setdefault(target.name, Timing()) if timings is not None else Timing()

        def forward(batch: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            start = time.perf_counter()
            out = target.embed(batch, rows)
            timing.seconds += time.perf_counter() - start
            timing.forwards += 1
            timing.images += batch.shape[0]
            return out

        # Reference embeddings: clean frames of every row any reference needs.
        needed = sorted({int(r) for rows in reference_rows for r in ([rows] if np.isscalar(rows) else rows)})
        ref_clean = torch.zeros((0,))
        chunks = []
        for start in range(0, len(needed), batch_size):
            rows = np.asarray(needed[start:start + batch_size])
            chunks.append(forward(frames_to_tensor(frames[rows], device), rows))
        if chunks:
            ref_clean = torch.cat(chunks)
        position = {row: i for i, row in enumerate(needed)}
        references = reference_embeddings(
            ref_clean, [[position[int(r)] for r in ([rows] if np.isscalar(rows) else rows)] for rows in reference_rows])

        for start in tqdm(range(0, len(image_rows), batch_size), desc=f"occlusion {target.name}", leave=False):
            stop = min(start + batch_size, len(image_rows))
            rows = image_rows[start:stop]
            ids = list(image_ids[start:stop])
            batch = frames_to_tensor(frames[rows], device)
            ref = references[start:stop].to(device)
            clean = cosine(forward(batch, rows), ref)
            fills = fill_values(batch, design.fill)
            base = {"target": target.name, "image": np.arange(start, stop)}

            def score(ranks: torch.Tensor, source: str, map_name: str, kind: str, repeat: int,
                      valid: np.ndarray | None = None) -> None:
                for threshold, count in counts.items():
                    occluded = cosine(forward(occlude(batch, ranks < count, fills), rows), ref)
                    clean_np, occluded_np = clean.cpu().numpy(), occluded.cpu().numpy()
                    if valid is not None:
                        bad = valid < count
                        occluded_np = np.where(bad, np.nan, occluded_np)
                    records.append(pd.DataFrame({
                        **base, "source": source, "map": map_name, "threshold": threshold, "kind": kind,
                        "repeat": repeat, "clean": clean_np, "occluded": occluded_np,
                        "drop": clean_np - occluded_np}))

            for source, maps in design.guides.items():
                for map_name, grid_maps in maps.items():
                    guide = torch.as_tensor(np.asarray(grid_maps[start:stop], dtype=np.float32), device=device)
                    score(pixel_ranks(upsample_maps(guide, size)), source, map_name, "leam", 0)
            for kind in design.random_kinds:
                for repeat in range(design.random_repeats):
                    valid, inside = None, None
                    if kind == "blob":
                        region = torch.as_tensor(np.asarray(face_region[start:stop]), device=device)
                        scores = random_blob_scores(ids, region, design.seed, repeat)
                    else:
                        scores = random_scores(ids, size, design.seed, kind, repeat).to(device)
                    if kind == "face":  # face pixels rank first; too small a face gives NaN (see score)
                        inside = torch.as_tensor(np.asarray(face_region[start:stop]), device=device)
                        valid = region_pixels[start:stop]
                    score(pixel_ranks(scores, valid=inside), "none", "none", f"random_{kind}", repeat, valid)
    if not records:
        return pd.DataFrame(columns=_COLUMNS)
    return pd.concat(records, ignore_index=True)[_COLUMNS]
