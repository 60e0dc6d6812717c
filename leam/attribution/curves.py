"""Deletion and insertion curves: how fast the match falls as the most relevant face pixels go, or returns as they come back.

For a photo, its reference and a relevance map (higher = more relevant), the face pixels
(:mod:`leam.face_region`, the top-level param ``face_region``) are ranked by decreasing relevance. At each
step ``f`` (a fraction of *that photo's* face region, ``explain.fractions``) the top ``top_count(f, face
pixels)`` of them (:func:`leam.topt.top_count`: round half up, at least 1) are

- **deleted**: replaced by the fill (``black``, ``mean`` or ``blur``, :mod:`leam.occlusion.fills`), the rest
  of the frame left as it is; a map that finds what the network uses makes the cosine fall fastest;
- **inserted**: the photo starts with its whole face region filled and only these pixels are restored; a
  good map makes the cosine rise fastest.

Each changed frame is embedded by the *target* network (:class:`leam.occlusion.targets.Target`, through
its own input warp) and compared with the photo's reference embedding under that network. Step 0 is the
clean photo (deletion) or the fully filled face (insertion). The area under each curve
(:func:`curve_auc`) is the trapezoid over ``[0, max f]`` divided by that span, i.e. the curve's mean
cosine: lower is better for deletion, higher for insertion.

Ranking: face pixels rank before every other pixel; ties (flat zero stretches of a ReLU map, patches
of the occlusion map) are broken in a random order seeded per (seed, image id) (:func:`tie_order`),
not by row-major index, so a map's flat part behaves like random pixels instead of removing the top of
the face first. The ranking itself is :func:`leam.topt.pixel_ranks` on the permuted pixels.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from leam.errors import LeamError, check_choice
from leam.occlusion.fills import fill_values, occlude
from leam.occlusion.masks import random_scores
from leam.topt import check_fraction, pixel_ranks, top_count

__all__ = ["CURVES", "CURVE_COLUMNS", "curve_auc", "curve_steps", "image_curves", "relevance_ranks",
           "removal_masks", "tie_order"]

CURVES = ("deletion", "insertion")
CURVE_COLUMNS = ["method", "curve", "fraction", "image", "cosine"]
TIE_REPEAT = 1
"""``repeat`` of the uniform random scores that order ties (repeat 0 is the occlusion stage's uniform mask)."""

Embed = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
"""``embed(frames (B, 3, S, S) float 0..255, rows (B,)) -> unit embeddings (B, D)`` (``Target.embed``)."""


def curve_steps(fractions: Sequence[float]) -> list[float]:
    """0 followed by the sorted, distinct ``explain.fractions`` (each in (0, 1])."""
    values = sorted({check_fraction(f, "explain.fractions") for f in fractions})
    if not values:
        raise LeamError("explain.fractions is empty; give e.g. [0.01, 0.05, 0.1, 0.2, 0.5]")
    return [0.0, *values]


def tie_order(image_ids: Sequence[str], size: int, seed: int) -> torch.Tensor:
    """(N, S * S) int64: a random permutation of each photo's pixels, seeded by (seed, image id)."""
    scores = random_scores(list(image_ids), size, seed, "uniform", TIE_REPEAT)
    return torch.argsort(scores.flatten(1), dim=1)


def relevance_ranks(scores: torch.Tensor, region: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rank (N, S, S) int64 of every pixel: face pixels first by decreasing score, ties in ``order``.

    scores (N, S, S) float (NaN ranks last), region (N, S, S) bool, order (N, S * S) a permutation per
    photo (:func:`tie_order`).
    """
    n = scores.shape[0]
    order = order.to(scores.device)
    flat = scores.reshape(n, -1).gather(1, order)
    valid = region.reshape(n, -1).to(scores.device).gather(1, order)
    permuted = pixel_ranks(flat[:, None], valid=valid[:, None]).reshape(n, -1)  # ties -> lower permuted index
    return torch.empty_like(permuted).scatter_(1, order, permuted).reshape(scores.shape)


def removal_masks(ranks: torch.Tensor, region: torch.Tensor, fraction: float, curve: str) -> torch.Tensor:
    """Pixels (N, S, S) bool that are filled at step ``fraction`` of ``curve`` (see the module docstring)."""
    check_choice("curve", curve, CURVES)
    pixels = region.reshape(region.shape[0], -1).sum(dim=1).tolist()
    if fraction == 0.0:
        return torch.zeros_like(region) if curve == "deletion" else region.clone()
    counts = torch.tensor([top_count(fraction, int(p)) for p in pixels], device=ranks.device)
    top = ranks < counts[:, None, None]
    return top if curve == "deletion" else region & ~top


def image_curves(embed: Embed, frames: torch.Tensor, rows: np.ndarray, references: torch.Tensor,
                 region: torch.Tensor, scores: Mapping[str, torch.Tensor], steps: Sequence[float], fill: str,
                 order: torch.Tensor, batch_size: int = 32) -> pd.DataFrame:
    """Deletion and insertion cosines of every map in ``scores`` at every step, for one batch of photos.

    frames (N, 3, S, S) float RGB 0..255 in the analysis frame; rows (N,) their rows for ``embed``;
    references (N, D) under the embedding network; region (N, S, S) bool with at least one face pixel
    per photo; scores {label: (N, S, S)}; steps from :func:`curve_steps`; order from :func:`tie_order`.
    Returns ``CURVE_COLUMNS`` rows (``image`` = position in the batch). Frames are embedded
    ``batch_size`` at a time whatever the step they belong to; step 0 is embedded once for all maps.
    """
    n = frames.shape[0]
    if bool((region.reshape(n, -1).sum(dim=1) == 0).any()):
        raise LeamError("a photo has an empty face region: deletion and insertion curves need face pixels")
    fills = fill_values(frames, fill)
    jobs: list[tuple[str, str, float, torch.Tensor]] = [("", curve, 0.0, removal_masks(region, region, 0.0, curve))
                                                       for curve in CURVES]
    for label, score in scores.items():
        ranks = relevance_ranks(score, region, order)
        jobs += [(label, curve, f, removal_masks(ranks, region, f, curve)) for curve in CURVES for f in steps[1:]]
    cosines = []
    per_chunk = max(1, batch_size // n)
    for start in range(0, len(jobs), per_chunk):
        chunk = jobs[start:start + per_chunk]
        masks = torch.cat([job[3] for job in chunk])
        picked = np.tile(np.arange(n), len(chunk))
        changed = occlude(frames[picked], masks, fills[picked])
        out = embed(changed, np.asarray(rows)[picked])
        cosines.append(F.cosine_similarity(out, references[picked].to(out.dtype), dim=1).reshape(len(chunk), n))
    values = torch.cat(cosines).cpu().numpy()
    records = []
    for (label, curve, fraction, _), cosine in zip(jobs, values):
        for target_label in (scores if not label else [label]):  # step 0 belongs to every map's curve
            records.append(pd.DataFrame({"method": target_label, "curve": curve, "fraction": fraction,
                                         "image": np.arange(n), "cosine": cosine}))
    if not records:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(records, ignore_index=True)[CURVE_COLUMNS]


def curve_auc(curves: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Normalised area under each curve: trapezoid of ``cosine`` over ``fraction`` / (max - min fraction).

    curves: one row per (``keys``..., fraction) (``keys`` name one curve of one photo, e.g. source,
    target, method, curve, image_id); returns one row per curve with column ``auc`` (the curve's mean
    cosine over the fraction axis; NaN when any step is missing or NaN).
    """
    keys = list(keys)
    wide = curves.set_index([*keys, "fraction"])["cosine"].unstack("fraction")
    x = wide.columns.to_numpy(dtype=np.float64)
    if len(x) < 2:
        raise LeamError("an area under a curve needs at least two steps")
    area = np.trapezoid(wide.to_numpy(dtype=np.float64), x=x, axis=1) / (x[-1] - x[0])
    return wide.index.to_frame(index=False).assign(auc=area)
