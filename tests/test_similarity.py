"""Bhattacharyya coefficient, exact EMD, pair sampling and the same-vs-different tables."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from leam.metrics.distributions import ground_cost, maps_to_distributions
from leam.metrics.similarity import (DIFFERENT, SAME, EMDConvergenceError, bhattacharyya_matrix, build_pairs,
                                     emd_pair, emd_pairs, gender_group, same_identity_pairs,
                                     sample_different_pairs, summary_tables)


@pytest.fixture(scope="module")
def photo_distributions(small_slice) -> np.ndarray:
    """Distributions (24, 196) from grey levels of the 24 sample photos (real, non-negative fields)."""
    maps = [cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (112, 112), interpolation=cv2.INTER_AREA)
            for p in small_slice.abspath]
    return maps_to_distributions(np.stack(maps).astype(np.float32), grid=14, fraction=0.1).probs


def test_bc_of_map_with_itself_is_one_and_of_disjoint_maps_zero(photo_distributions):
    matrix = bhattacharyya_matrix(photo_distributions)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    left, right = np.zeros((1, 196)), np.zeros((1, 196))
    left[0, :98], right[0, 98:] = 1 / 98, 1 / 98
    assert bhattacharyya_matrix(left, right)[0, 0] == 0.0


def test_all_pairs_bc_equals_pairwise_loop(photo_distributions):
    matrix = bhattacharyya_matrix(photo_distributions)
    loop = np.array([[np.sum(np.sqrt(p * q)) for q in photo_distributions] for p in photo_distributions])
    np.testing.assert_allclose(matrix, loop, atol=1e-12)
    assert (matrix[~np.eye(24, dtype=bool)] < 1).all()


@pytest.mark.parametrize("shift", [1, 3])
def test_emd_of_a_shift_by_k_cells_is_k_cell_sizes(small_slice, shift):
    grey = cv2.imread(small_slice.abspath[0], cv2.IMREAD_GRAYSCALE)
    canvas = np.zeros((2, 112, 112), np.float32)
    canvas[0, 16:72, 16:72] = cv2.resize(grey, (56, 56), interpolation=cv2.INTER_AREA)
    canvas[1] = np.roll(canvas[0], 8 * shift, axis=1)  # k cells of 8 map pixels to the right
    probs = maps_to_distributions(canvas, grid=14).probs
    cost = ground_cost(14, 224)  # one cell = 16 analysis-frame pixels
    assert emd_pair(probs[0], probs[1], cost) == pytest.approx(16.0 * shift, rel=1e-9)
    assert emd_pair(probs[0], probs[0], cost) == pytest.approx(0.0, abs=1e-9)


def test_emd_non_convergence_raises(photo_distributions):
    cost = ground_cost(14, 224)
    with pytest.raises(EMDConvergenceError, match="numItermax=1"):
        emd_pair(photo_distributions[0], photo_distributions[1], cost, max_iter=1)


def test_emd_pairs_two_processes_match_one(photo_distributions):
    cost = ground_cost(14, 224)
    pairs = np.stack(np.triu_indices(24, k=1), axis=1)[:60]
    one = emd_pairs(photo_distributions, pairs, cost, workers=1)
    two = emd_pairs(photo_distributions, pairs, cost, workers=2, chunk=16)
    np.testing.assert_array_equal(one, two)
    direct = [emd_pair(photo_distributions[i], photo_distributions[j], cost) for i, j in pairs[:5]]
    np.testing.assert_allclose(one[:5], direct)


def test_pair_sampling_is_seeded_and_size_matched(small_slice):
    identities = np.array(list(small_slice.identity) + ["extra_person"] * 5)
    same = same_identity_pairs(identities)
    assert len(same) == 8 * 3 + 10 and (identities[same[:, 0]] == identities[same[:, 1]]).all()
    first = sample_different_pairs(identities, 1.0, seed=7)
    assert np.array_equal(first, sample_different_pairs(identities, 1.0, seed=7))
    assert not np.array_equal(first, sample_different_pairs(identities, 1.0, seed=8))
    assert len(first) == len(same)
    assert (identities[first[:, 0]] != identities[first[:, 1]]).all() and (first[:, 0] < first[:, 1]).all()
    assert len({tuple(p) for p in first}) == len(first)
    assert len(sample_different_pairs(identities, 2.0, seed=7)) == 2 * len(same)
    # identities weigh alike: the 5-image person anchors 10 different pairs
    extra = np.flatnonzero(identities == "extra_person")
    assert np.isin(first, extra).any(axis=1).sum() >= 10


def test_gender_groups():
    groups = gender_group(["female", "male", "female", "male", "unknown", "female"],
                          ["female", "male", "male", "male", "female", "female"],
                          [True, True, False, False, False, False])
    assert groups.tolist() == ["female", "male", "mixed", "male-male", "unknown", "female-female"]


def test_tables_find_same_more_similar_on_photo_pairs(small_slice, photo_distributions):
    meta = small_slice.assign(image_id=small_slice.file, row=np.arange(len(small_slice)))
    pairs = build_pairs(meta, 1.0, seed=0)
    assert (pairs.pair_type == SAME).sum() == (pairs.pair_type == DIFFERENT).sum() == 24
    bc = bhattacharyya_matrix(photo_distributions)[pairs.a, pairs.b]
    # a planted person-specific pattern: same-identity values are shifted up
    value = bc + np.where(pairs.pair_type == SAME, 0.5, 0.0)
    scores = pd.DataFrame({"model": "m", "layer": "overall", "threshold": 0.1, "metric": "bc",
                           "pair_type": pairs.pair_type, "gender_group": pairs.gender_group, "value": value})
    summary, by_gender, tests = summary_tables(scores, n_boot=200, seed=0)
    assert summary.set_index("pair_type").loc[SAME, "n"] == 24
    assert set(by_gender.gender_group) == {"female", "male", "female-female", "male-male", "mixed"}
    headline = tests[tests.gender == "all"].iloc[0]
    assert headline.same_more_similar and headline.p_value < 1e-3 and headline.rank_biserial > 0.5
    assert set(tests.gender) == {"all", "female", "male"}
    scores["value"] = bc  # without the planted shift the groups must not separate that clearly
    _, _, plain = summary_tables(scores, n_boot=200, seed=0)
    assert plain[plain.gender == "all"].iloc[0].rank_biserial < headline.rank_biserial
