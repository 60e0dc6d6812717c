"""LEAM maps as probability distributions over a coarse grid of the analysis frame.

Comparing two maps with the Bhattacharyya coefficient or the Earth Mover's Distance needs each map to be
a discrete probability distribution. The recipe, applied in this order to raw stored maps
(N, G, G) (``data/leam/<model>/maps.npy``, G = ``leam.store_size``):

1. negative-value policy (``similarity.negative_policy``): ``clip`` sets negative values to 0, ``abs``
   takes absolute values (raw maps should be non-negative already; the policy makes it explicit);
2. optional face mask (``similarity.face_mask``): pixels outside the face region are set to 0, so the
   next step picks the most relevant pixels *of the face* (masking after top-t would throw away the part
   of the t budget that fell on background and exclude many maps outright);
3. optional top-t selection (fraction t of the G x G pixels, computed at full resolution *before*
   pooling): the ``top_count(t, G * G)`` most relevant pixels (``leam.topt``: round half up of t * G * G,
   at least 1; ties to the lower row-major pixel index), chosen inside the face region when masked, are
   kept, the rest set to 0 (the same pixel budget with or without the mask). t = 1 keeps the full map;
4. area-average pooling to ``grid`` x ``grid`` cells (G must be a multiple of ``grid``);
5. normalisation to sum 1. A map with no mass left is *excluded* (``valid`` is False) and counted,
   never turned into NaNs.

The ground metric for EMD is the Euclidean distance between cell centres measured in analysis-frame
pixels (frame of ``align.frame_size`` pixels): one cell spans ``frame_size / grid`` frame pixels (2 px on
the stored 112 grid where top-t maps are compared, 16 px on the 14 x 14 grid of ``similarity.emd_grid``
where full maps are; ``leam.metrics.similarity.emd_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leam.errors import LeamError, check_choice
from leam.topt import check_fraction, top_fraction_mask

NEGATIVE_POLICIES = ("clip", "abs")
GROUND_METRIC = "euclidean distance between cell centres, in analysis-frame pixels"


@dataclass(frozen=True)
class Distributions:
    """Pooled, normalised maps.

    probs: float64 (N, grid * grid), row-major cells, each valid row sums to 1, invalid rows are all 0.
    valid: bool (N,), False where the map had no mass (an excluded map).
    grid: cells per side.
    """

    probs: np.ndarray
    valid: np.ndarray
    grid: int

    @property
    def n_excluded(self) -> int:
        return int((~self.valid).sum())


def apply_negative_policy(maps: np.ndarray, policy: str) -> np.ndarray:
    """Return float32 maps with negative values clipped to 0 (``clip``) or made positive (``abs``)."""
    check_choice("similarity.negative_policy", policy, NEGATIVE_POLICIES)
    maps = np.asarray(maps, dtype=np.float32)
    if not np.all(np.isfinite(maps)):
        raise LeamError("maps contain NaN or infinite values; rerun the leam stage")
    return np.maximum(maps, 0.0) if policy == "clip" else np.abs(maps)


def pool_area(maps: np.ndarray, grid: int) -> np.ndarray:
    """Area-average (N, G, G) maps to (N, grid, grid); each cell is the mean of its G/grid squared pixels."""
    n, size, size_w = maps.shape
    if size != size_w:
        raise LeamError(f"square maps expected, got {size}x{size_w}")
    if grid <= 0 or size % grid:
        divisors = [d for d in range(1, size + 1) if size % d == 0]
        raise LeamError(f"grid={grid!r} (similarity.emd_grid, similarity.bc_grid, variability.grid) must divide the "
                        f"map size {size}; choose one of: "
                        f"{', '.join(map(str, divisors))}")
    step = size // grid
    if step == 1:  # the stored grid itself: the same values as the mean over 1 x 1 blocks, without the reduction
        return maps.astype(np.float64)
    return maps.reshape(n, grid, step, grid, step).mean(axis=(2, 4), dtype=np.float64)


def maps_to_distributions(maps: np.ndarray, grid: int, negative_policy: str = "clip",
                          fraction: float = 1.0, face_mask: np.ndarray | None = None) -> Distributions:
    """Turn raw maps (N, G, G) into distributions over ``grid`` x ``grid`` cells (see module docstring).

    face_mask: optional bool (N, G, G) or (G, G), True inside the face region in map pixels.
    """
    maps = apply_negative_policy(maps, negative_policy)
    if maps.ndim != 3:
        raise LeamError(f"maps must have shape (N, G, G), got {maps.shape}")
    if face_mask is not None:
        face_mask = np.asarray(face_mask, dtype=bool)
        if face_mask.shape[-2:] != maps.shape[-2:] or face_mask.ndim == 3 and face_mask.shape[0] != maps.shape[0]:
            raise LeamError(f"face mask shape {face_mask.shape} does not match the maps {maps.shape}")
        maps = np.where(face_mask, maps, np.float32(0.0))
    if check_fraction(fraction) < 1.0:
        maps = np.where(top_fraction_mask(maps, fraction, valid=face_mask), maps, np.float32(0.0))
    probs = pool_area(maps, grid).reshape(maps.shape[0], grid * grid)  # a new array: normalised in place
    mass = probs.sum(axis=1, keepdims=True)
    valid = mass[:, 0] > 0
    np.divide(probs, np.where(valid[:, None], mass, 1.0), out=probs)  # rows without mass are all 0 already
    return Distributions(probs=probs, valid=valid, grid=grid)


def cell_size(frame_size: int, grid: int) -> float:
    """Side of one grid cell in analysis-frame pixels."""
    return frame_size / grid


def cell_centres(grid: int, frame_size: int) -> np.ndarray:
    """(grid * grid, 2) cell centres (x, y) in analysis-frame pixels, row-major like ``Distributions.probs``.

    The frame spans [0, frame_size] in the area sense, so cell j's centre is (j + 0.5) * frame_size / grid.
    """
    centres = (np.arange(grid) + 0.5) * cell_size(frame_size, grid)
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def ground_cost(grid: int, frame_size: int) -> np.ndarray:
    """EMD cost matrix (grid^2, grid^2): Euclidean distance between cell centres in analysis-frame pixels."""
    centres = cell_centres(grid, frame_size)
    return np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1))
