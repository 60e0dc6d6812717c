"""Top-t selection: which pixels are "the top t" of a map, defined once for every stage.

Each headline figure that speaks of "the top-t most relevant pixels" (correlate's class shares, the
similarity and variability distributions, the occlusion masks) selects them here, so the same t keeps
the same number of pixels, chosen the same way, everywhere.

The rule
--------
- **Range.** t is a fraction in (0, 1]; anything else is a LeamError naming the value. t = 1 keeps every
  pixel. (t = 0 would select nothing and give NaN shares or a zero drop, so it is refused.)
- **Count.** A map of n pixels keeps ``k = top_count(t, n)`` = round half up of t * n, at least 1:
  floor(t * n + 1/2), computed exactly on t as written (its shortest decimal form, so 0.145 * 100 = 14.5
  gives 15, not the 14 that binary floating point's 14.4999... would give). At the default t = 0.01
  that is 125 of the 12,544 cells of the 112 x 112 stored grid (125.44) and 502 of the 50,176 pixels of
  the 224 x 224 analysis frame (501.76). Why: it is the integer nearest to t * n, which is what the
  README promises (``round(t x pixels)``). ``ceil`` keeps more than t * n whenever t * n is not an
  integer (126 cells at 1% of 112 x 112), Python's ``round`` sends halves to the even neighbour
  (2.5 -> 2, 3.5 -> 4). At least one pixel, so a tiny t never selects nothing.
- **Ranking.** A higher value is more relevant. Ties are broken by the lower row-major (flat) pixel
  index, exactly as a stable descending sort orders them, so a selection holds exactly k pixels and
  never depends on the sort algorithm. NaN ranks after every number (tied with -inf, by index).
- **All-zero or constant maps** are one big tie: their top k are their first k pixels in row-major order.
  Selection does not judge whether a map carries relevance: callers that need mass (correlate,
  ``leam.metrics.distributions``) exclude maps without mass themselves and count them.
- **Valid region** (optional ``valid``, bool (N, H, W) or (H, W), e.g. the face pixels): invalid pixels
  are never selected and rank after every valid pixel. k stays ``top_count(t, H * W)``, a fraction of the
  whole map, not of the region, so masked and unmasked selections spend the same pixel budget; a region
  with fewer than k pixels yields all of them (callers that need exactly k check ``valid.sum()``).

Shapes and types: maps are (N, H, W) numpy arrays or torch tensors; results come back as the same kind
(numpy bool / int64 arrays, or torch bool / int64 tensors on the maps' device). Everything is batched:
one ``topk`` (masks) or one stable sort (ranks) per call, no per-pixel Python loop. ``pixel_ranks``
serves several thresholds from one sort: the top-t mask is ``ranks < top_count(t, H * W)``; ``pixel_order``
(its inverse, the pixels by rank) keeps only the first ``count`` pixels of that sort.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable

import numpy as np
import torch

from leam.errors import LeamError

__all__ = ["check_fraction", "top_count", "effective_thresholds", "pixel_order", "pixel_ranks", "top_fraction_mask"]


def check_fraction(value, name: str = "threshold") -> float:
    """``value`` as a float if it is a top-t fraction in (0, 1]; otherwise a LeamError naming it."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise LeamError(f"{name}={value!r} is not a number; use a fraction in (0, 1] (1 = every pixel)") from None
    if not 0.0 < fraction <= 1.0:
        raise LeamError(f"{name}={value!r} is not a valid top-t fraction; use a fraction in (0, 1] "
                        f"(0.01 = top 1%, 1 = every pixel)")
    return fraction


def top_count(t: float, n: int) -> int:
    """Pixels kept of a map of ``n`` pixels at fraction ``t``: round half up of t * n, at least 1 (t in (0, 1])."""
    fraction = check_fraction(t)
    if int(n) < 1:
        raise LeamError(f"a top-t selection needs a map with at least one pixel, got n={n!r}")
    exact = Decimal(repr(fraction)) * int(n)  # t as written: 0.145 * 100 is exactly 14.5
    return max(1, min(int(n), int(exact.to_integral_value(rounding=ROUND_HALF_UP))))


def effective_thresholds(thresholds: Iterable, headline: float, name: str = "thresholds") -> list[float]:
    """Sorted, de-duplicated thresholds of a stage including the top-level ``headline`` one; each in (0, 1].

    ``name`` is the parameter reported in errors (e.g. ``similarity.thresholds``).
    """
    values = {check_fraction(value, name) for value in thresholds}
    values.add(check_fraction(headline, "threshold"))
    return sorted(values)


# ------------------------------------------------------------------------------------------- ranking

def _writable(array) -> np.ndarray:
    """A contiguous array torch can wrap without a copy when possible (read-only memmaps are copied)."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _as_tensor(maps) -> tuple[torch.Tensor, bool]:
    """(N, H, W) maps -> (tensor, came_from_numpy). Half precision and integers are ranked as float32."""
    from_numpy = not isinstance(maps, torch.Tensor)
    tensor = torch.from_numpy(_writable(maps)) if from_numpy else maps
    if tensor.ndim != 3:
        raise LeamError(f"top-t selection needs maps of shape (N, H, W), got {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    return tensor, from_numpy


def _valid_flat(valid, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    """The valid region as bool (N, H * W) on ``device``, broadcast from (H, W) or (N, H, W)."""
    if valid is None:
        return None
    region = valid if isinstance(valid, torch.Tensor) else torch.from_numpy(_writable(valid))
    region = region.to(device=device, dtype=torch.bool)
    if region.shape[-2:] != shape[-2:] or region.ndim not in (2, 3) or region.ndim == 3 and region.shape[0] != shape[0]:
        raise LeamError(f"valid region of shape {tuple(region.shape)} does not match maps {tuple(shape)}; "
                        f"use (H, W) or (N, H, W)")
    return region.expand(shape).reshape(shape[0], -1)


def _ranking_key(tensor: torch.Tensor) -> torch.Tensor:
    """Flat (N, H * W) values with NaN as -inf: NaN ranks last, ties by index."""
    return torch.nan_to_num(tensor.reshape(tensor.shape[0], -1), nan=-torch.inf)


def _back(result: torch.Tensor, shape: torch.Size, from_numpy: bool):
    result = result.reshape(shape)
    return result.numpy() if from_numpy else result


def _rank_order(tensor: torch.Tensor, valid) -> torch.Tensor:
    """Flat pixel indices (N, H * W) int64 from rank 0 on: one stable sort, a second one with a region."""
    key = _ranking_key(tensor)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    region = _valid_flat(valid, tensor.shape, tensor.device)
    if region is not None:  # a second stable sort moves invalid pixels last, keeping the value order
        invalid = (~region).gather(1, order).to(torch.uint8)
        order = order.gather(1, torch.sort(invalid, dim=1, stable=True).indices)
    return order


def pixel_ranks(maps, valid=None):
    """Rank (N, H, W) int64 of every pixel: 0 = most relevant, ties to the lower flat index, NaN last.

    With ``valid``, every valid pixel ranks before every invalid one. ``ranks < top_count(t, H * W)``
    (``& valid`` with a region) is the top-t mask of any t from one sort.
    """
    tensor, from_numpy = _as_tensor(maps)
    order = _rank_order(tensor, valid)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return _back(ranks, tensor.shape, from_numpy)


def pixel_order(maps, count: int | None = None, valid=None):
    """The ``count`` most relevant pixels of each map (N, H, W) as flat indices (N, count) int64, rank 0 first.

    The inverse of :func:`pixel_ranks` (same sort, same ties and NaN and ``valid`` rules): ``order[n, r]`` is
    the pixel of rank r, so ``order[:, :top_count(t, H * W)]`` lists the top-t pixels of any t up to
    ``count / (H * W)`` (all pixels when ``count`` is None). Smaller to keep than ranks when many masks of
    the same maps are built later (the occlusion stage's, once for every target model).
    """
    tensor, from_numpy = _as_tensor(maps)
    pixels = tensor.shape[1] * tensor.shape[2]
    if count is not None and not 0 <= int(count) <= pixels:
        raise LeamError(f"count={count!r} pixels of maps with {pixels} pixels; use 0..{pixels}")
    count = pixels if count is None else int(count)
    order = _top_order(tensor, count, valid) if 0 < count < pixels else _rank_order(tensor, valid)[:, :count]
    return order.numpy() if from_numpy else order


def _top_order(tensor: torch.Tensor, count: int, valid) -> torch.Tensor:
    """``_rank_order(tensor, valid)[:, :count]`` without sorting every pixel: ``topk`` finds each map's cut value,
    and only the pixels at or above it (in index order, so a stable sort keeps the ties' rule) are sorted.

    Exact: with a finite cut every pixel of rank < count is a valid one at or above it. Maps whose cut is
    -inf (fewer than ``count`` valid pixels with a number) take the full sort.
    """
    key = _ranking_key(tensor)
    region = _valid_flat(valid, tensor.shape, tensor.device)
    if region is not None:
        key = key.masked_fill(~region, -torch.inf)
    cut = torch.topk(key, count, dim=1, sorted=False).values.min(dim=1).values
    full = torch.isneginf(cut)
    order = torch.empty((key.shape[0], count), dtype=torch.int64, device=key.device)
    if full.any():
        order[full] = _rank_order(tensor[full], None if region is None else region[full].reshape(-1, *tensor.shape[1:]))[:, :count]
    rows = torch.nonzero(~full).flatten()
    if len(rows):
        above = key[rows] >= cut[rows, None]  # (R, P): at least count per map
        row, pixel = torch.nonzero(above, as_tuple=True)  # row-major: ascending pixel index within a map
        sizes = above.sum(dim=1)
        slot = torch.arange(len(pixel), device=key.device) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        candidates = torch.full((len(rows), int(sizes.max())), -1, dtype=torch.int64, device=key.device)
        candidates[row, slot] = pixel
        values = torch.full(candidates.shape, -torch.inf, dtype=key.dtype, device=key.device)
        values[row, slot] = key[rows][row, pixel]  # padding (-inf) ranks after every candidate (all >= a finite cut)
        best = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :count]
        order[rows] = candidates.gather(1, best)
    return order


def top_fraction_mask(maps, t: float, valid=None):
    """Boolean mask (N, H, W) of the top-``t`` pixels of each map: ``top_count(t, H * W)`` each (see module).

    Same selection as ``(pixel_ranks(maps, valid) < k) & valid`` without a full sort: the cut value comes
    from ``torch.topk`` (fast even when many values tie, where ``np.partition`` degrades), and only maps
    with more pixels tied at the cut than fit are sorted out by index. The elementwise work runs in numpy
    on the CPU (several times faster than torch's CPU kernels here); a tensor comes back on its device.
    """
    tensor, from_numpy = _as_tensor(maps)
    shape, device = tensor.shape, tensor.device
    key = tensor.detach().reshape(shape[0], -1).cpu().numpy()
    pixels = key.shape[1]
    k = top_count(t, pixels)
    region = _valid_flat(valid, shape, torch.device("cpu"))
    region = None if region is None else region.numpy()
    nan = np.isnan(key)
    if nan.any() or region is not None:  # NaN and invalid pixels rank last
        key = np.where(nan if region is None else nan | ~region, -np.inf, key)
    if k >= pixels:
        keep = np.ones(key.shape, dtype=bool) if region is None else region.copy()
    else:
        cut = torch.topk(torch.from_numpy(key), k, dim=1, sorted=False).values.min(dim=1).values.numpy()[:, None]
        keep = key >= cut
        surplus = np.count_nonzero(keep, axis=1) > k  # maps with more pixels tied at the cut than fit
        if surplus.any():
            rows, row_cut = key[surplus], cut[surplus]
            above, tied = rows > row_cut, rows == row_cut
            if region is not None:
                tied &= region[surplus]
            needed = k - np.count_nonzero(above, axis=1)[:, None]  # tied pixels that still fit, lowest index first
            keep[surplus] = above | (tied & (np.cumsum(tied, axis=1) <= needed))
    keep = keep.reshape(shape)
    return keep if from_numpy else torch.from_numpy(keep).to(device)
