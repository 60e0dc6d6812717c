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
- A mask does not depend on the model that embeds the occluded frame, so :class:`TopPixels` ranks each
  (image, mask) once and keeps only its top pixels in rank order (``leam.topt.pixel_order``, up to the
  largest threshold's count): every target model and threshold reads its masks from there
  (:func:`top_pixel_masks`), the same pixels ``pixel_ranks(scores) < count`` selects.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from leam.errors import LeamError, check_choice
from leam.topt import pixel_order

__all__ = ["RANDOM_KINDS", "TopPixels", "random_blob_scores", "random_scores", "top_pixel_masks", "upsample_maps"]

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


class TopPixels:
    """The occlusion masks of N images, each kept as its top ``count`` pixels in rank order, computed once.

    A mask is named ``("leam", source, map)`` (the guide ``guides[source][map]`` (N, G, G), upsampled) or
    ``("random_<kind>", repeat)`` (the seeded scores of :func:`random_scores` / :func:`random_blob_scores`;
    ``face`` ranks the face region first). :meth:`order` ranks a mask on first use, ``batch_size`` images
    at a time on ``device``, and keeps (N, count) flat pixel indices on the CPU (uint16 when S * S fits,
    2 bytes a pixel), so the masks of every target model and threshold come from one ranking.
    """

    def __init__(self, image_ids: Sequence[str], size: int, count: int, seed: int,
                 guides: Mapping[str, Mapping[str, np.ndarray]] | None = None, face_region: np.ndarray | None = None,
                 batch_size: int = 32, device: torch.device | str = "cpu") -> None:
        self.image_ids, self.size, self.count, self.seed = list(image_ids), int(size), int(count), int(seed)
        self.guides = {source: dict(maps) for source, maps in (guides or {}).items()}
        self.face_region, self.batch_size, self.device = face_region, int(batch_size), torch.device(device)
        self._dtype = np.uint16 if self.size * self.size <= np.iinfo(np.uint16).max + 1 else np.int32
        self._orders: dict[tuple, np.ndarray] = {}

    def order(self, name: tuple) -> np.ndarray:
        """Top pixels (N, count) of the mask ``name`` (flat indices into S * S, rank 0 first)."""
        if name not in self._orders:
            self._orders[name] = np.concatenate(
                [self._rank(name, start, min(start + self.batch_size, len(self.image_ids)))
                 for start in range(0, len(self.image_ids), self.batch_size)]
                or [np.zeros((0, self.count), dtype=self._dtype)])
        return self._orders[name]

    def _rank(self, name: tuple, start: int, stop: int) -> np.ndarray:
        inside = None
        if name[0] == "leam":
            _, source, map_name = name
            maps = np.asarray(self.guides[source][map_name][start:stop], dtype=np.float32)
            scores = upsample_maps(torch.as_tensor(maps, device=self.device), self.size)
        else:
            kind, repeat = name[0].removeprefix("random_"), int(name[1])
            check_choice("occlusion.random", kind, RANDOM_KINDS)
            if kind in ("face", "blob"):
                if self.face_region is None:
                    raise LeamError("random face and blob baselines need a face region")
                region = torch.as_tensor(np.asarray(self.face_region[start:stop]), device=self.device)
            ids = self.image_ids[start:stop]
            if kind == "blob":
                scores = random_blob_scores(ids, region, self.seed, repeat)
            else:
                scores = random_scores(ids, self.size, self.seed, kind, repeat).to(self.device)
                inside = region if kind == "face" else None  # face pixels rank first
        return pixel_order(scores, self.count, valid=inside).cpu().numpy().astype(self._dtype)


def top_pixel_masks(orders: torch.Tensor, counts: torch.Tensor, size: int) -> torch.Tensor:
    """Masks bool (C, S, S): row c holds the first ``counts[c]`` pixels of ``orders[c]`` (C, K) (flat indices by
    rank, :class:`TopPixels`), i.e. ``pixel_ranks(scores) < counts[c]`` of the mask's scores."""
    orders = orders.to(torch.int64)
    keep = torch.arange(orders.shape[1], device=orders.device)[None, :] < counts.to(orders.device)[:, None]
    masks = torch.zeros((orders.shape[0], size * size), dtype=torch.bool, device=orders.device)
    return masks.scatter_(1, orders, keep).reshape(-1, size, size)
