"""Which pixels an occlusion hides: LEAM maps upsampled to frame pixels, and the random baselines' scores.

Every mask is the top-``k`` pixels of a score image (N, S, S) in the analysis frame, ranked with
``leam.topt.pixel_ranks`` (``mask = ranks < top_count(t, S * S)``), so one ranking serves every threshold
and the masks of one image are nested across thresholds.

Conventions
-----------
- LEAM guides: the stored maps live on a G x G grid over the frame (``leam.store_size``). They are
  upsampled to S x S with bilinear interpolation (``align_corners=False``: grid cell i covers frame
  pixels [i*S/G, (i+1)*S/G), the same pixel-area convention as the warps) *before* ranking, so the
  mask has pixel resolution and exactly ``top_count(t, S * S)`` pixels (``leam.topt``: round half up of
  t * S * S, at least 1; 502 pixels at t = 0.01 and S = 224). Higher map value = more relevant (for
  ``leam.sign = supports_match`` occluding them should lower similarity). NaN ranks last.
- Ties are broken deterministically as in ``leam.topt``: among equal values the lower flat pixel index
  (row-major) wins, so a constant map occludes the first rows of the frame.
- Random masks rank i.i.d. uniform scores drawn from a generator seeded by (seed, image id, kind,
  repeat), so an image gets the same random mask whatever batch or subset it is in; thresholds of one
  draw are nested, like the LEAM masks.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from leam.errors import check_choice

__all__ = ["RANDOM_KINDS", "random_blob_scores", "random_scores", "upsample_maps"]

RANDOM_KINDS = ("uniform", "face", "blob")
"""Random baselines: ``uniform`` i.i.d. pixels over the frame, ``face`` i.i.d. pixels inside the face region,
``blob`` a disc of the same pixel count centred on a random face pixel. LEAM masks are compact blobs, and
scattered pixels disturb a CNN far more per pixel than one blob (measured on dlib: at 1%, scattered face
pixels drop the similarity ~5x more than a disc), so ``blob`` is the shape-matched control."""
_KIND_CODE = {"uniform": 1, "face": 2, "blob": 3}


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Raw maps (N, G, G) on the stored grid -> (N, S, S) float32 in frame pixels (bilinear, area convention)."""
    maps = maps.to(torch.float32)
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    return F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def _image_rng(seed: int, image_id: str, kind: str, repeat: int) -> np.random.Generator:
    """The generator of one (seed, image id, kind, repeat): independent of batching and of which images are kept."""
    return np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode("utf-8")), _KIND_CODE[kind], int(repeat)])


def random_scores(image_ids: Sequence[str], size: int, seed: int, kind: str, repeat: int) -> torch.Tensor:
    """I.i.d. uniform scores (N, S, S) float32, one generator per (seed, image id, kind, repeat).

    Seeding per image keeps an image's random mask independent of batching and of which images are kept.
    """
    check_choice("occlusion.random", kind, RANDOM_KINDS)
    rows = [_image_rng(seed, image_id, kind, repeat).random((size, size), dtype=np.float32) for image_id in image_ids]
    return torch.from_numpy(np.stack(rows)) if rows else torch.empty((0, size, size))


def random_blob_scores(image_ids: Sequence[str], region: torch.Tensor, seed: int, repeat: int) -> torch.Tensor:
    """Scores (N, S, S) = minus the squared distance to one random pixel of each image's ``region`` (N, S, S).

    Their top-k pixels form a disc of exactly k pixels (ties by pixel index) centred inside the face; the
    centre comes from a generator seeded by (seed, image id, ``blob``, repeat). An empty region centres
    the disc at the frame centre.
    """
    size = region.shape[-1]
    centres = []
    for image_id, mask in zip(image_ids, region.cpu().numpy()):
        rng = _image_rng(seed, image_id, "blob", repeat)
        candidates = np.flatnonzero(mask)
        flat = int(candidates[rng.integers(len(candidates))]) if len(candidates) else (size // 2) * size + size // 2
        centres.append(divmod(flat, size))
    centre = torch.tensor(centres, dtype=torch.float32, device=region.device)  # (N, 2) as (y, x)
    coords = torch.arange(size, dtype=torch.float32, device=region.device)
    dy = (coords[None, :] - centre[:, :1]) ** 2  # (N, S)
    dx = (coords[None, :] - centre[:, 1:]) ** 2
    return -(dy[:, :, None] + dx[:, None, :])
