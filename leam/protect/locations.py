"""Where a protection may change pixels (question 1): LEAM's regions against random and location-free choices.

Every location is a bool mask (N, S, S) in the analysis frame holding the same pixel budget: ``k =
top_count(budget, face pixels)`` of each photo's face region (top-level ``face_region``), so a budget of
5% changes 5% of that photo's face. Scores are ranked once with :func:`leam.topt.pixel_ranks` inside the
face region (ties to the lower flat index), so masks are nested across budgets.

- ``leam:<map>``: the photo's own LEAM map (``overall`` or a layer), the mean over the source networks of
  their max-normalised maps (:func:`leam.core.overall_map`), bilinearly upsampled from the stored grid.
- ``person:<map>``: one map per person, the mean of the person's *other* photos' guide maps
  (max-normalised first); the protected photo never contributes to its own person map.
- ``random_face`` / ``random_blob``: i.i.d. face pixels / a disc centred on a random face pixel, seeded per
  photo (:mod:`leam.occlusion.masks`, the occlusion stage's baselines).
- ``sparse``: no mask; the top-k pixels of the clean gradient magnitude anywhere in the frame, chosen by
  PGD itself (:func:`leam.protect.pgd.optimise`); its mask here is empty and its count is k.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from leam.core import overall_map
from leam.errors import LeamError
from leam.occlusion.masks import random_blob_scores, random_scores, upsample_maps
from leam.topt import pixel_ranks, top_count

__all__ = ["RANDOM_LOCATIONS", "budget_counts", "guide_maps", "location_masks", "person_maps"]

RANDOM_LOCATIONS = ("face", "blob")


def guide_maps(maps_by_source: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ensemble's map of each photo, float32 (N, G, G): the mean of the sources' max-normalised maps.

    ``maps_by_source[source]`` is (N, G, G), raw maps of the same photos in the same order.
    """
    if not maps_by_source:
        raise LeamError("no source network has the requested map")
    stacked = torch.stack([torch.as_tensor(np.asarray(m, dtype=np.float32)) for m in maps_by_source.values()], dim=1)
    return overall_map(torch.nan_to_num(stacked, nan=0.0)).numpy()


def person_maps(all_guides: np.ndarray, identities: Sequence[str], photo_rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out person maps (N, G, G) for photos ``photo_rows`` of ``all_guides`` (M, G, G), and their counts.

    Photo i's person map is the mean of the max-normalised guide maps of every other photo of its
    identity (``identities`` (M,) labels the rows of ``all_guides``); returns the maps and (N,) how many
    photos built each (0 = the person has no other photo: an all-zero map).
    """
    identities = np.asarray(identities)
    maps, counts = [], []
    for row in photo_rows:
        others = np.flatnonzero((identities == identities[row]) & (np.arange(len(identities)) != row))
        counts.append(len(others))
        if len(others) == 0:
            maps.append(np.zeros(all_guides.shape[1:], dtype=np.float32))
            continue
        maps.append(overall_map(torch.as_tensor(np.asarray(all_guides[others], dtype=np.float32))[None])[0].numpy())
    return np.stack(maps), np.asarray(counts, dtype=np.int64)


def budget_counts(face_region: np.ndarray, budget: float) -> np.ndarray:
    """(N,) pixels each photo may change: ``top_count(budget, its face pixels)``."""
    return np.array([top_count(budget, int(n)) for n in np.asarray(face_region).reshape(len(face_region), -1).sum(1)],
                    dtype=np.int64)


def location_masks(location: str, budget: float, face_region: np.ndarray, image_ids: Sequence[str], seed: int,
                   guides: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool (N, S, S) masks of ``location`` at ``budget`` (see module); ``sparse`` gives all-False masks.

    ``guides`` maps ``leam:<map>`` / ``person:<map>`` to (N, G, G) scores of the same photos.
    """
    region = torch.as_tensor(np.asarray(face_region, dtype=bool))
    size = region.shape[-1]
    counts = torch.as_tensor(budget_counts(face_region, budget))
    if location == "sparse":
        return np.zeros(region.shape, dtype=bool)
    if location in guides:
        scores = upsample_maps(torch.as_tensor(np.asarray(guides[location], dtype=np.float32)), size)
    elif location == "random_face":
        scores = random_scores(image_ids, size, seed, "face", 0)
    elif location == "random_blob":
        scores = random_blob_scores(image_ids, region, seed, 0)
    else:
        raise LeamError(f"unknown protection location {location!r}; choose from: {', '.join([*guides, 'random_face', 'random_blob', 'sparse'])}")
    ranks = pixel_ranks(scores, valid=region)
    return ((ranks < counts.view(-1, 1, 1)) & region).numpy()
