"""Maps -> distributions: pooling, negative policy, deterministic top-t, face mask, exclusions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leam.errors import LeamError
from leam.face_region import face_region
from leam.metrics.distributions import (
    cell_centres,
    ground_cost,
    maps_to_distributions,
    pool_area,
)
from leam.parsing.classes import CLASS_ID
from leam.topt import top_fraction_mask


@pytest.fixture(scope="module")
def photo_maps(small_slice) -> np.ndarray:
    """Real non-negative fields: grey levels of 6 sample photos resized to 112 x 112, float32 (6, 112, 112)."""
    maps = []
    for path in small_slice.abspath[:6]:
        grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        assert grey is not None, path
        maps.append(cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA).astype(np.float32))
    return np.stack(maps)


def test_pool_area_keeps_mass_and_averages_blocks(photo_maps):
    pooled = pool_area(photo_maps, 14)
    assert pooled.shape == (6, 14, 14)
    np.testing.assert_allclose(pooled.sum(axis=(1, 2)) * 64, photo_maps.sum(axis=(1, 2), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(pooled[2, 3, 5], photo_maps[2, 24:32, 40:48].mean(), rtol=1e-6)


def test_pool_area_at_the_stored_grid_is_the_maps_in_float64(photo_maps):
    same = pool_area(photo_maps, photo_maps.shape[-1])
    assert same.dtype == np.float64 and np.array_equal(same, photo_maps.astype(np.float64))
    assert np.array_equal(same, photo_maps.reshape(6, 112, 1, 112, 1).mean(axis=(2, 4), dtype=np.float64))


def test_pool_area_rejects_grid_that_does_not_divide():
    with pytest.raises(LeamError, match="must divide the map size 112; choose one of: .*14"):
        pool_area(np.zeros((1, 112, 112)), 10)


def test_distributions_sum_to_one_and_all_zero_map_is_excluded(photo_maps):
    maps = np.concatenate([photo_maps, np.zeros((1, 112, 112), np.float32)])
    dist = maps_to_distributions(maps, grid=14)
    assert dist.probs.shape == (7, 196)
    np.testing.assert_allclose(dist.probs[:6].sum(axis=1), 1.0)
    assert dist.valid.tolist() == [True] * 6 + [False]
    assert dist.n_excluded == 1
    assert np.all(dist.probs[6] == 0) and np.all(np.isfinite(dist.probs))


def test_negative_policy_clip_vs_abs():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 0, 0], maps[0, 3, 3] = 1.0, -3.0
    clip = maps_to_distributions(maps, grid=2, negative_policy="clip").probs[0]
    absolute = maps_to_distributions(maps, grid=2, negative_policy="abs").probs[0]
    np.testing.assert_allclose(clip, [1, 0, 0, 0])
    np.testing.assert_allclose(absolute, [0.25, 0, 0, 0.75])
    with pytest.raises(LeamError, match="negative_policy='keep' is not valid; choose one of: clip, abs"):
        maps_to_distributions(maps, grid=2, negative_policy="keep")


def test_top_fraction_keeps_exactly_k_and_breaks_ties_by_lowest_index(photo_maps):
    mask = top_fraction_mask(photo_maps, 0.01)
    k = 125  # round half up of 0.01 * 112 * 112 = 125.44 (leam.topt; the former ceil kept 126)
    assert mask.reshape(6, -1).sum(axis=1).tolist() == [k] * 6
    for image, keep in zip(photo_maps, mask):  # every kept pixel >= every dropped one
        assert image[keep].min() >= image[~keep].max()
    flat = np.zeros((1, 2, 5), np.float32)
    flat[0, 1, 4] = 2.0  # one clear winner, then a 9-way tie at 0
    tied = top_fraction_mask(flat, 0.3).reshape(-1)  # k = 3
    assert np.flatnonzero(tied).tolist() == [0, 1, 9]


def test_top_fraction_is_applied_before_pooling(photo_maps):
    top = maps_to_distributions(photo_maps, grid=14, fraction=0.05)
    full = maps_to_distributions(photo_maps, grid=14)
    keep = top_fraction_mask(photo_maps, 0.05)
    expected = pool_area(np.where(keep, photo_maps, 0), 14).reshape(6, -1)
    np.testing.assert_allclose(top.probs, expected / expected.sum(axis=1, keepdims=True))
    assert ((top.probs > 0).sum(axis=1) < (full.probs > 0).sum(axis=1)).all()


def test_face_mask_restricts_the_distribution_to_the_face_cells():
    labels = np.full((1, 224, 224), 255, np.uint8)
    labels[0, 100:180, 60:160] = CLASS_ID["skin"]
    labels[0, 0:20, :] = CLASS_ID["background"]
    mask = face_region("parsing", 224, labels=labels, grid=112)
    assert mask.shape == (1, 112, 112) and mask[0, 50:90, 30:80].all() and not mask[0, :10].any()
    maps = np.ones((1, 112, 112), np.float32)
    dist = maps_to_distributions(maps, grid=14, face_mask=mask)
    cells = dist.probs[0].reshape(14, 14)
    assert cells[:6].sum() == 0 and cells[7:11, 4:10].min() > 0


def test_ground_cost_is_in_frame_pixels():
    centres = cell_centres(14, 224)
    assert centres[0].tolist() == [8.0, 8.0] and centres[1].tolist() == [24.0, 8.0]
    cost = ground_cost(14, 224)
    assert cost.shape == (196, 196)
    assert cost[0, 1] == pytest.approx(16.0) and cost[0, 15] == pytest.approx(16.0 * np.sqrt(2))


def test_face_mask_applies_before_top_fraction(photo_maps):
    mask = np.zeros((112, 112), bool)
    mask[28:84, 28:84] = True
    masked = maps_to_distributions(photo_maps, grid=14, fraction=0.01, face_mask=mask)
    assert masked.valid.all()  # the top-1% budget is spent inside the face, never lost to the background
    cells = masked.probs.reshape(6, 14, 14)
    assert cells[:, :3].sum() == 0 and cells[:, :, 11:].sum() == 0
    inside = np.where(mask, photo_maps, 0)
    expected = pool_area(np.where(top_fraction_mask(inside, 0.01), inside, 0), 14).reshape(6, -1)
    np.testing.assert_allclose(masked.probs, expected / expected.sum(axis=1, keepdims=True))
