"""leam.occlusion.masks: LEAM maps upsampled to frame pixels, the random baselines' scores on real faces, and the
masks ranked once (TopPixels) equal to those of pixel_ranks."""

from __future__ import annotations

import numpy as np
import torch

from leam import occlusion as occ
from leam.face_region import landmark_hull
from leam.topt import pixel_ranks, top_count, top_fraction_mask
from tests.occlusion_faces import FRAME, occlusion_faces, smooth_maps  # noqa: F401


def test_upsampled_map_mask_sits_on_the_hot_cell() -> None:
    grid = np.zeros((1, 112, 112), dtype=np.float32)
    grid[0, 30:34, 70:74] = 1.0  # 4x4 cells = 8x8 frame pixels at rows 60..67, cols 140..147
    mask = top_fraction_mask(occ.upsample_maps(torch.from_numpy(grid), FRAME), 64 / FRAME**2)[0]
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert mask.sum() == 64
    assert 59 <= ys.min() and ys.max() <= 68 and 139 <= xs.min() and xs.max() <= 148


def test_random_masks_match_counts_and_stay_in_the_face(occlusion_faces: dict) -> None:  # noqa: F811
    ids = occlusion_faces["image_id"]
    region = torch.from_numpy(landmark_hull(occlusion_faces["landmarks"], FRAME))
    for fraction in (0.01, 0.05, 0.10):
        count = top_count(fraction, FRAME * FRAME)
        uniform = pixel_ranks(occ.random_scores(ids, FRAME, 0, "uniform", 0)) < count
        face = pixel_ranks(occ.random_scores(ids, FRAME, 0, "face", 0), valid=region) < count
        assert uniform.reshape(len(ids), -1).sum(1).tolist() == [count] * len(ids)
        assert face.reshape(len(ids), -1).sum(1).tolist() == [count] * len(ids)
        assert not (face & ~region).any()
        assert (uniform & ~region).any()  # uniform masks do reach outside the face
    # Same seed and image -> same mask whatever the batch; another repeat -> another mask.
    alone = occ.random_scores(ids[1:2], FRAME, 0, "uniform", 0)
    assert torch.equal(alone[0], occ.random_scores(ids, FRAME, 0, "uniform", 0)[1])
    assert not torch.equal(alone, occ.random_scores(ids[1:2], FRAME, 0, "uniform", 1))
    assert occ.random_scores([], FRAME, 0, "uniform", 0).shape == (0, FRAME, FRAME)


def test_blob_baseline_is_a_disc_of_exact_count_centred_in_the_face(occlusion_faces: dict) -> None:  # noqa: F811
    ids = occlusion_faces["image_id"]
    region = torch.from_numpy(landmark_hull(occlusion_faces["landmarks"], FRAME))
    scores = occ.random_blob_scores(ids, region, seed=0, repeat=0)
    for fraction in (0.01, 0.05):
        count = top_count(fraction, FRAME * FRAME)
        mask = pixel_ranks(scores) < count
        assert mask.reshape(len(ids), -1).sum(1).tolist() == [count] * len(ids)
        for image in range(len(ids)):
            centre = torch.nonzero(scores[image] == 0)[0]
            assert region[image, centre[0], centre[1]] and mask[image, centre[0], centre[1]]
            ys, xs = torch.nonzero(mask[image], as_tuple=True)
            radius = ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2).float().sqrt().max()
            assert radius <= np.sqrt(count / np.pi) + 1.5  # compact: a disc, not scattered pixels
    assert not torch.equal(scores, occ.random_blob_scores(ids, region, seed=0, repeat=1))
    assert torch.equal(scores[1:2], occ.random_blob_scores(ids[1:2], region[1:2], seed=0, repeat=0))


def test_blob_of_an_empty_region_is_centred_on_the_frame() -> None:
    scores = occ.random_blob_scores(["a/1"], torch.zeros((1, 8, 8), dtype=torch.bool), seed=0, repeat=0)
    assert torch.nonzero(scores[0] == 0).tolist() == [[4, 4]]


def test_top_pixels_rank_each_mask_once_and_give_the_masks_of_pixel_ranks(occlusion_faces: dict) -> None:  # noqa: F811
    ids = occlusion_faces["image_id"]
    n = len(ids)
    region = landmark_hull(occlusion_faces["landmarks"], FRAME)
    guide = smooth_maps(n, seed=7)
    count = top_count(0.05, FRAME * FRAME)
    bank = occ.TopPixels(ids, FRAME, count, 0, {"m": {"overall": guide}}, region, batch_size=4)
    inside = torch.from_numpy(region)
    cases = {("leam", "m", "overall"): (occ.upsample_maps(torch.from_numpy(guide), FRAME), None),
             ("random_uniform", 0): (occ.random_scores(ids, FRAME, 0, "uniform", 0), None),
             ("random_face", 1): (occ.random_scores(ids, FRAME, 0, "face", 1), inside),
             ("random_blob", 0): (occ.random_blob_scores(ids, inside, 0, 0), None)}
    for name, (scores, valid) in cases.items():
        order = bank.order(name)
        assert order.dtype == np.uint16 and order.shape == (n, count)  # 2 bytes a pixel at S = 224
        assert bank.order(name) is order  # ranked once, then shared
        ranks = pixel_ranks(scores, valid=valid)
        orders = torch.from_numpy(order.astype(np.int64))
        for k in (1, top_count(0.01, FRAME * FRAME), count):
            assert torch.equal(occ.top_pixel_masks(orders, torch.full((n,), k), FRAME), ranks < k), (name, k)
        mixed = torch.tensor([1, count] * (n // 2) + [7] * (n % 2))  # one count per row, as a queue of versions
        assert torch.equal(occ.top_pixel_masks(orders, mixed, FRAME), ranks < mixed[:, None, None])
        # the batch the ranking runs in does not matter
        alone = occ.TopPixels(ids, FRAME, count, 0, {"m": {"overall": guide}}, region, batch_size=1)
        assert np.array_equal(alone.order(name), order)
