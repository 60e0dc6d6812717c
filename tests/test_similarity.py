"""Bhattacharyya coefficient, exact EMD, pair sampling and the same-vs-different tables."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import ot
import pandas as pd
import pytest

from leam.metrics.distributions import cell_centres, ground_cost, maps_to_distributions
from leam.metrics.similarity import (
    DIFFERENT,
    SAME,
    EMDConvergenceError,
    bhattacharyya_matrix,
    bhattacharyya_pairs,
    build_pairs,
    emd_grid,
    emd_pair,
    emd_pair_subset,
    emd_pairs,
    gender_group,
    same_identity_pairs,
    sample_different_pairs,
    summary_tables,
)


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


def test_pair_bc_takes_the_matrix_for_few_photos_and_dot_products_for_many_both_equal_to_a_loop(photo_distributions):
    """bhattacharyya_pairs: the float32 matrix rows while N * N <= waste x P, each pair's own dot product beyond;
    both equal a float64 loop over the pairs to float32 rounding, and the matrix path is the matrix, bit for bit."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(photo_distributions), size=(2, 50))
    loop = np.array([np.sum(np.sqrt(photo_distributions[i] * photo_distributions[j])) for i, j in zip(a, b)])
    few = bhattacharyya_pairs(photo_distributions, a, b)  # 24 * 24 <= 256 * 50: the matrix
    np.testing.assert_array_equal(few, bhattacharyya_matrix(photo_distributions, dtype=np.float32)[a, b])
    many = bhattacharyya_pairs(photo_distributions, a, b, matrix_max_waste=0, chunk=7)  # dot products, 8 chunks
    for values in (few, many):
        assert values.dtype == np.float64 and values.shape == (50,)
        np.testing.assert_allclose(values, loop, rtol=1e-5, atol=1e-6)
    assert bhattacharyya_pairs(photo_distributions, a[:0], b[:0]).shape == (0,)


@pytest.mark.parametrize("shift", [1, 3])
def test_emd_of_a_shift_by_k_cells_is_k_cell_sizes(small_slice, shift):
    grey = cv2.imread(small_slice.abspath[0], cv2.IMREAD_GRAYSCALE)
    canvas = np.zeros((2, 112, 112), np.float32)
    canvas[0, 16:72, 16:72] = cv2.resize(grey, (56, 56), interpolation=cv2.INTER_AREA)
    canvas[1] = np.roll(canvas[0], 8 * shift, axis=1)  # k cells of 8 map pixels to the right
    probs = maps_to_distributions(canvas, grid=14).probs
    centres = cell_centres(14, 224)  # one cell = 16 analysis-frame pixels
    assert emd_pair(probs[0], probs[1], centres) == pytest.approx(16.0 * shift, rel=1e-9)
    assert emd_pair(probs[0], probs[0], centres) == pytest.approx(0.0, abs=1e-9)


def test_top_t_emd_on_the_stored_grid_is_in_frame_pixels(small_slice):
    """A top-1% map shifted by 3 stored cells moves its mass 3 x 2 = 6 analysis-frame pixels (112 grid of a
    224 frame), with no pooling."""
    grey = cv2.imread(small_slice.abspath[1], cv2.IMREAD_GRAYSCALE)
    canvas = np.zeros((2, 112, 112), np.float32)
    canvas[0, 20:76, 20:76] = cv2.resize(grey, (56, 56), interpolation=cv2.INTER_AREA)
    canvas[1] = np.roll(canvas[0], 3, axis=0)
    dist = maps_to_distributions(canvas, grid=112, fraction=0.01)
    assert (dist.probs > 0).sum(axis=1).tolist() == [125, 125]
    assert emd_pair(dist.probs[0], dist.probs[1], cell_centres(112, 224)) == pytest.approx(6.0, rel=1e-9)


def test_support_emd_equals_dense_pot_on_small_grids():
    """emd_pair (support only, shared mass left in place) = POT's exact EMD on the dense 16 x 16 problem
    (256 x 256 cost), to 1e-9 relative: sparse random maps, overlapping, disjoint and nearly equal ones."""
    rng = np.random.default_rng(7)
    grid, frame = 16, 224
    centres, dense_cost = cell_centres(grid, frame), ground_cost(grid, frame)
    maps = rng.random((12, grid * grid)) * (rng.random((12, grid * grid)) < 0.08)  # ~20 non-zero cells each
    maps[1] = maps[0] * (1 + 1e-3 * rng.random(grid * grid))  # the same support, nearly the same masses
    maps[2, :128], maps[3, 128:] = 0, 0  # disjoint halves
    probs = maps / maps.sum(axis=1, keepdims=True)
    for i, j in [(0, 1), (2, 3), *zip(range(12), rng.permutation(12))]:
        dense = ot.emd2(probs[i], probs[j], dense_cost, numItermax=1_000_000)
        assert emd_pair(probs[i], probs[j], centres) == pytest.approx(dense, rel=1e-9, abs=1e-12)


def test_emd_grid_is_the_stored_grid_for_top_t_and_the_pooling_grid_for_full_maps():
    assert emd_grid(0.01, 112, 14) == 112 and emd_grid(0.5, 112, 28) == 112
    assert emd_grid(1.0, 112, 14) == 14


def test_emd_non_convergence_raises(photo_distributions):
    with pytest.raises(EMDConvergenceError, match="numItermax=1"):
        emd_pair(photo_distributions[0], photo_distributions[1], cell_centres(14, 224), max_iter=1)


def test_emd_pairs_two_processes_match_one(photo_distributions):
    centres = cell_centres(14, 224)
    pairs = np.stack(np.triu_indices(24, k=1), axis=1)[:60]
    one = emd_pairs(photo_distributions, pairs, centres, workers=1)
    two = emd_pairs(photo_distributions, pairs, centres, workers=2, chunk=16)
    np.testing.assert_array_equal(one, two)
    direct = [emd_pair(photo_distributions[i], photo_distributions[j], centres) for i, j in pairs[:5]]
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


# ------------------------------------------------------------------------------------- end to end
def make_fake_pipeline(root, small_slice, model: str = "fake_net") -> dict:
    """A data/ tree like the upstream stages write, from the 24 sample photos (grey levels as 'maps').

    Layers: ``grey`` (the photo), ``blurred`` (Gaussian blur of it) and ``overall`` (their mean); the last image's
    maps are all zero (a map that must be excluded, not NaN). Labels: face class in the central square.
    """
    import json

    from leam.parsing.classes import CLASS_ID

    grey = np.stack([cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (112, 112), interpolation=cv2.INTER_AREA)
                     for p in small_slice.abspath]).astype(np.float32)
    blurred = np.stack([cv2.GaussianBlur(g, (0, 0), 6) for g in grey])
    maps = np.stack([grey, blurred, (grey + blurred) / 2], axis=1)
    maps[-1] = 0
    image_ids = [f"{i}/{Path(f).stem}" for i, f in zip(small_slice.identity, small_slice.file)]
    folder = root / "leam" / model
    folder.mkdir(parents=True)
    np.save(folder / "maps.npy", maps.astype(np.float16))
    (folder / "layers.json").write_text(json.dumps({"model": model, "layers": ["grey", "blurred", "overall"],
                                                    "grid": 112, "frame_size": 224}))
    pd.DataFrame({"row": range(24), "image_id": image_ids, "identity": small_slice.identity,
                  "gender": small_slice.gender, "reference_image_id": image_ids, "cosine": 0.9}
                 ).to_csv(folder / "meta.csv", index=False)
    labels = np.full((24, 224, 224), CLASS_ID["background"], np.uint8)
    labels[:, 40:184, 40:184] = CLASS_ID["skin"]
    (root / "parsing").mkdir()
    np.save(root / "parsing" / "labels.npy", labels)
    (root / "aligned").mkdir()
    pd.DataFrame({"row": range(24), "image_id": image_ids}).to_csv(root / "aligned" / "index.csv", index=False)
    return {"model": model, "image_ids": image_ids, "grey": grey}


def fake_model_spec(name: str):
    """A registry entry for a model that exists only as LEAM outputs on disk: params.yaml's `models` must be
    registered (leam.config), although the analysis stages never load the network."""
    from leam.models.registry import ModelSpec

    return ModelSpec(name=name, description="LEAM outputs only (test)", input_size=112, embedding_dim=8,
                     layers=("grey",), load=lambda weights_dir: None, input_warp=lambda *args: None)


@pytest.fixture(autouse=True)
def fake_net_registered(monkeypatch):
    from leam.models import registry

    registry.available_models()  # the built-in models first
    monkeypatch.setitem(registry._REGISTRY, "fake_net", fake_model_spec("fake_net"))


def write_params(root, model: str, **similarity) -> Path:
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["models"] = [model]
    params["face_region"] = "parsing"  # the fake pipeline's labels hold a face square; it has no landmarks
    params["similarity"].update({"bootstrap": 50, "workers": 1, **similarity})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_similarity_stage_end_to_end(tmp_path, small_slice):
    from stages.similarity import build_parser, main, run_stage

    fake = make_fake_pipeline(tmp_path, small_slice)
    params = write_params(tmp_path, fake["model"], face_mask=True)
    argv = ["--params", str(params), "--leam-dir", str(tmp_path / "leam"), "--parsing-dir", str(tmp_path / "parsing"),
            "--aligned-dir", str(tmp_path / "aligned"), "--out", str(tmp_path / "out"),
            "--metrics", str(tmp_path / "similarity.json"), "--no-progress"]
    assert run_stage("similarity", main, build_parser(), argv) == 0
    out = tmp_path / "out"
    pairs, scores = pd.read_csv(out / "pairs.csv"), pd.read_csv(out / "scores.csv")
    assert (pairs.pair_type == SAME).sum() == 24 and (pairs.pair_type == DIFFERENT).sum() == 24
    assert set(scores.threshold) == {0.01, 0.05, 1.0} and scores.value.notna().all()
    emd = scores[scores.metric == "emd"]
    assert set(emd.layer) == {"overall"} and set(emd.threshold) == {0.01} and (emd.value >= 0).all()
    exclusions = pd.read_csv(out / "exclusions.csv")
    assert (exclusions.maps_excluded == 1).all()  # the all-zero last image, in every layer and variant
    assert (exclusions.pairs_dropped == ((pairs.image_a == fake["image_ids"][-1]) | (pairs.image_b == fake["image_ids"][-1])).sum()).all()
    # BC written for grey maps at top 5% equals BC recomputed from the photo directly, with the face mask,
    # on the stored 112 grid (similarity.bc_grid = 0: BC is not pooled; only full-map EMD uses similarity.emd_grid)
    rows = scores[(scores.layer == "grey") & (scores.threshold == 0.05) & (scores.metric == "bc")].merge(pairs, on=["model", "pair_id"])
    mask = np.zeros((112, 112), bool)
    mask[20:92, 20:92] = True
    dist = maps_to_distributions(fake["grey"].astype(np.float16).astype(np.float32), 112, fraction=0.05, face_mask=mask)
    index = {image: i for i, image in enumerate(fake["image_ids"])}
    first = rows.iloc[0]
    expected = np.sum(np.sqrt(dist.probs[index[first.image_a]] * dist.probs[index[first.image_b]]))
    assert first.value == pytest.approx(expected, abs=2e-6)
    tests = pd.read_csv(out / "tests.csv")
    assert set(tests.gender) == {"all", "female", "male"} and tests.p_value.between(0, 1).all()
    by_gender = pd.read_csv(out / "by_gender.csv")
    assert {"female-female", "male-male", "mixed"} <= set(by_gender.gender_group)
    metrics = __import__("json").loads((tmp_path / "similarity.json").read_text())
    assert metrics["emd_grid"] == 14 and "pixels" in metrics["ground_metric"]
    assert metrics["emd_grids"] == {"0.01": {"grid": 112, "cell_size_px": 2.0, "method": metrics["emd_grids"]["0.01"][
        "method"]}} and metrics["emd_grids"]["0.01"]["method"].startswith("exact")
    # the top-1% EMD written is the exact one on the stored grid, recomputed from the maps on disk
    first = emd[emd.threshold == 0.01].merge(pairs, on=["model", "pair_id"]).iloc[0]
    stored = np.load(tmp_path / "leam" / fake["model"] / "maps.npy")[:, -1].astype(np.float32)
    dist = maps_to_distributions(stored, 112, fraction=0.01, face_mask=mask)
    expected = emd_pair(dist.probs[index[first.image_a]], dist.probs[index[first.image_b]], cell_centres(112, 224))
    assert first.value == pytest.approx(expected, abs=1e-6)
    headline = metrics["models"][fake["model"]]["layers"]["overall"]
    assert set(headline) == {"bc_top", "bc_full", "emd_top"}
    assert headline["bc_top"]["same_ci"][0] <= headline["bc_top"]["same_mean"] <= headline["bc_top"]["same_ci"][1]


def test_similarity_stage_bad_input_is_one_line_error(tmp_path, small_slice, capsys):
    from stages.similarity import build_parser, main, run_stage

    fake = make_fake_pipeline(tmp_path, small_slice)
    argv = ["--leam-dir", str(tmp_path / "leam"), "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")]
    params = write_params(tmp_path, fake["model"], emd_grid=10)
    assert run_stage("similarity", main, build_parser(), ["--params", str(params), *argv]) == 2
    assert "similarity.emd_grid=10 is not valid; it must divide leam.store_size=112" in capsys.readouterr().err
    params = write_params(tmp_path, "no_such_model")
    assert run_stage("similarity", main, build_parser(), ["--params", str(params), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models=['no_such_model'] is not valid; 'no_such_model' is not a registered model" in err[0]


def test_metrics_json_is_strict():
    import json

    from leam.io import json_safe

    doc = json_safe({"p": np.float64("nan"), "ci": [np.float32(0.5), float("inf")], "ok": np.bool_(True), "n": np.int64(3)})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"p": None, "ci": [0.5, None], "ok": True, "n": 3}


def test_model_tables_and_metrics_keep_models_apart(small_slice):
    from leam.config import SimilarityParams
    from leam.metrics.similarity import metrics_document, model_similarity, similarity_tables

    grey = np.stack([cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (56, 56), interpolation=cv2.INTER_AREA)
                     for p in small_slice.abspath]).astype(np.float32)
    meta = small_slice.assign(image_id=small_slice.file)
    cfg = SimilarityParams(emd_grid=14, thresholds=[1.0], bootstrap=20, workers=1)
    layers = {"layers": ["overall"]}
    results = [model_similarity(name, maps[:, None], layers, meta, cfg, 0.1, 0, 224, progress=False)
               for name, maps in (("a", grey), ("b", grey[::-1].copy()))]
    assert [r.counts for r in results] == [{"n_maps": 24, "n_same_pairs": 24, "n_different_pairs": 24}] * 2
    tables = similarity_tables(results, n_boot=20, seed=0)
    assert list(tables) == ["pairs", "scores", "summary", "by_gender", "tests", "exclusions"]
    assert all(list(t.columns[:1]) == ["model"] for t in tables.values())
    scores = tables["scores"]
    assert set(scores.metric) == {"bc", "emd"} and (scores.value == scores.value.round(6)).all()
    # pair ids restart per model: the summary counts each model's pairs once
    assert (tables["summary"].groupby(["model", "threshold", "metric"]).n.sum() == 48).all()
    doc = metrics_document(results, tables["summary"], tables["tests"], cfg, 0.1, 224, 56)
    assert list(doc["models"]) == ["a", "b"] and doc["emd_thresholds"] == [0.1]
    assert doc["emd_grids"]["0.1"]["grid"] == 56 and doc["emd_grids"]["0.1"]["cell_size_px"] == 4.0
    assert doc["models"]["a"]["n_same_pairs"] == 24 and set(doc["models"]["b"]["layers"]["overall"]) == {
        "bc_top", "bc_full", "emd_top"}


def test_emd_pair_subset_keeps_the_same_different_proportion_and_is_seeded():
    same = np.r_[np.ones(300, bool), np.zeros(700, bool)]
    keep = emd_pair_subset(same, 100, seed=3)
    assert keep.sum() == 100 and keep[same].sum() == 30 and keep[~same].sum() == 70
    assert np.array_equal(keep, emd_pair_subset(same, 100, seed=3))
    assert not np.array_equal(keep, emd_pair_subset(same, 100, seed=4))
    assert emd_pair_subset(same, 0, seed=3).all() and emd_pair_subset(same, 5000, seed=3).all()
