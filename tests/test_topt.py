"""Top-t selection (leam.topt): the count rule, ties, all-zero maps, valid regions, range errors, pixel order."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from leam.errors import LeamError
from leam.topt import check_fraction, effective_thresholds, pixel_order, pixel_ranks, top_count, top_fraction_mask


def test_count_is_round_half_up_at_least_one():
    assert top_count(0.01, 112 * 112) == 125   # 125.44: ceil would keep 126
    assert top_count(0.01, 224 * 224) == 502   # 501.76
    assert top_count(0.05, 112 * 112) == 627 and top_count(0.10, 112 * 112) == 1254
    assert top_count(0.025, 100) == 3          # a half goes up (Python's round would give 2)
    assert top_count(0.145, 100) == 15         # 14.5 exactly on t as written, not float's 14.4999...
    assert top_count(0.0125, 100) == 1 and top_count(1e-6, 16) == 1   # never nothing
    assert top_count(1, 12544) == 12544 and top_count(1.0, 7) == 7


@pytest.mark.parametrize("bad", [0, 0.0, -0.01, 1.0000001, 1.5, float("nan"), float("inf")])
def test_out_of_range_fractions_name_the_value(bad):
    with pytest.raises(LeamError, match=rf"threshold={bad!r} is not a valid top-t fraction; use a fraction in \(0, 1\]"):
        top_count(bad, 100)
    with pytest.raises(LeamError, match=rf"threshold={bad!r}"):
        top_fraction_mask(np.ones((1, 4, 4)), bad)
    with pytest.raises(LeamError, match="is not a number"):
        check_fraction("lots", "occlusion.thresholds")


def test_effective_thresholds_merge_sort_and_deduplicate():
    assert effective_thresholds([0.05, 0.01, 1.0, 0.05], 0.10) == [0.01, 0.05, 0.1, 1.0]
    assert effective_thresholds([1.0], 0.01) == [0.01, 1.0] and effective_thresholds([], 0.2) == [0.2]
    with pytest.raises(LeamError, match="similarity.thresholds=0.0 is not a valid"):
        effective_thresholds([0.0, 0.5], 0.01, "similarity.thresholds")
    with pytest.raises(LeamError, match="threshold=2 is not a valid"):
        effective_thresholds([0.5], 2)


def test_mask_keeps_exactly_k_of_the_largest_values():
    maps = np.random.default_rng(0).random((4, 112, 112), dtype=np.float32)
    mask = top_fraction_mask(maps, 0.01)
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == maps.shape
    assert mask.reshape(4, -1).sum(axis=1).tolist() == [125] * 4
    for image, keep in zip(maps, mask):
        assert image[keep].min() >= image[~keep].max()
    assert top_fraction_mask(maps, 1.0).all()


def test_ties_go_to_the_lower_row_major_index():
    flat = np.zeros((1, 2, 5), np.float32)
    flat[0, 1, 4] = 2.0  # one clear winner, then a 9-way tie at 0
    assert np.flatnonzero(top_fraction_mask(flat, 0.3)).tolist() == [0, 1, 9]   # k = 3
    assert pixel_ranks(flat).reshape(-1).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    quantised = np.random.default_rng(1).integers(0, 3, size=(3, 16, 16)).astype(np.float32)
    for t in (0.01, 0.1, 0.33, 0.5, 0.9):
        k = top_count(t, 256)
        mask = top_fraction_mask(quantised, t)
        assert np.array_equal(mask, pixel_ranks(quantised) < k)  # the fast path and the sort agree
        for image, keep in zip(quantised, mask):
            cut = image[keep].min()
            tied = np.flatnonzero(image.reshape(-1) == cut)
            kept = np.flatnonzero(keep.reshape(-1) & (image.reshape(-1) == cut))
            assert kept.tolist() == tied[:kept.size].tolist()  # the earliest tied pixels


def test_all_zero_maps_select_the_first_k_pixels():
    zero = np.zeros((2, 112, 112), np.float32)
    mask = top_fraction_mask(zero, 0.01)
    expected = np.zeros(112 * 112, bool)
    expected[:125] = True
    assert np.array_equal(mask[0].reshape(-1), expected) and np.array_equal(mask[1], mask[0])
    assert np.array_equal(pixel_ranks(zero)[0].reshape(-1), np.arange(112 * 112))


def test_nan_ranks_last():
    maps = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    maps[0, 3, 3] = np.nan  # would be the largest
    maps[0, 0, 0] = -np.inf
    ranks = pixel_ranks(maps).reshape(-1)
    assert ranks[15] == 15 and ranks[0] == 14 and ranks[14] == 0
    assert not top_fraction_mask(maps, 15 / 16)[0, 3, 3]


def test_valid_region_restricts_selection_but_keeps_the_budget():
    rng = np.random.default_rng(2)
    maps = rng.random((3, 32, 32)).astype(np.float32)
    valid = np.zeros((3, 32, 32), bool)
    valid[:, 8:24, 8:24] = True          # 256 of 1024 pixels
    valid[2] = False
    valid[2, :2, :5] = True              # 10 pixels, fewer than k
    mask = top_fraction_mask(maps, 0.1, valid=valid)   # k = round(102.4) = 102 of the whole map
    assert not (mask & ~valid).any()
    assert mask.reshape(3, -1).sum(axis=1).tolist() == [102, 102, 10]
    for image, keep, region in zip(maps[:2], mask[:2], valid[:2]):
        assert image[keep].min() >= image[region & ~keep].max()
    ranks = pixel_ranks(maps, valid=valid)
    for t in (0.01, 0.1, 0.3, 1.0):
        assert np.array_equal(top_fraction_mask(maps, t, valid=valid), (ranks < top_count(t, 1024)) & valid)
    assert (ranks[0][valid[0]] < valid[0].sum()).all()   # every valid pixel ranks before every invalid one
    shared = top_fraction_mask(maps, 0.1, valid=valid[0])  # one (H, W) region for every map
    assert np.array_equal(shared[:2], mask[:2])
    assert np.array_equal(top_fraction_mask(maps, 1.0, valid=valid), valid)
    with pytest.raises(LeamError, match="valid region of shape"):
        top_fraction_mask(maps, 0.1, valid=valid[:, :16])


def test_tensors_in_tensors_out_and_numpy_agrees():
    maps = np.random.default_rng(3).random((2, 20, 20)).astype(np.float16)   # stored maps are float16
    region = np.ones((20, 20), bool)
    region[:, :3] = False
    tensor_mask = top_fraction_mask(torch.from_numpy(maps), 0.05, valid=torch.from_numpy(region))
    assert isinstance(tensor_mask, torch.Tensor) and tensor_mask.dtype == torch.bool
    assert np.array_equal(tensor_mask.numpy(), top_fraction_mask(maps, 0.05, valid=region))
    ranks = pixel_ranks(torch.from_numpy(maps))
    assert ranks.dtype == torch.int64 and np.array_equal(ranks.numpy(), pixel_ranks(maps))
    frozen = maps.copy()
    frozen.flags.writeable = False   # like a read-only memmap of maps.npy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(top_fraction_mask(frozen, 0.05), top_fraction_mask(maps, 0.05))
    with pytest.raises(LeamError, match=r"shape \(N, H, W\)"):
        top_fraction_mask(maps[0], 0.05)


def test_pixel_order_lists_the_pixels_by_rank():
    rng = np.random.default_rng(4)
    maps = np.round(rng.random((3, 12, 12)), 1).astype(np.float32)  # many ties
    maps[1, 2, 3] = np.nan
    region = np.zeros((3, 12, 12), bool)
    region[:, 2:9, 3:10] = True
    region[2] = False
    region[2, 0, :4] = True  # 4 pixels
    for valid in (None, region):
        ranks = pixel_ranks(maps, valid=valid).reshape(3, -1)
        order = pixel_order(maps, valid=valid)
        assert order.dtype == np.int64 and order.shape == (3, 144)
        assert np.array_equal(order, np.argsort(ranks, axis=1))  # the inverse permutation of the ranks
        top = pixel_order(maps, 30, valid=valid)
        assert np.array_equal(top, order[:, :30])
        for count in (1, 7, 30):
            mask = np.zeros((3, 144), bool)
            np.put_along_axis(mask, top[:, :count], True, axis=1)
            assert np.array_equal(mask, ranks < count)
    assert torch.equal(pixel_order(torch.from_numpy(maps), 5), torch.from_numpy(pixel_order(maps, 5)))
    assert pixel_order(maps, 0).shape == (3, 0)
    with pytest.raises(LeamError, match="count=145 pixels of maps with 144 pixels"):
        pixel_order(maps, 145)
