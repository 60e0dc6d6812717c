"""Within-person variability: CV on known numbers, share and map CVs, and the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leam.errors import LeamError
from leam.metrics.variability import (
    PER_IDENTITY_COLUMNS,
    coefficient_of_variation,
    gender_tests,
    map_variability,
    metrics_document,
    model_map_variability,
    share_variability,
    summarise_variability,
    summarize_by_gender,
)
from tests.test_similarity import fake_net_registered, make_fake_pipeline, write_params  # noqa: F401 (autouse fixture)


def test_cv_on_known_numbers():
    # mean 4, sample std sqrt(((2)^2 + 0 + 2^2) / 2) = 2 -> CV 0.5
    values = np.array([2.0, 4.0, 6.0])
    assert coefficient_of_variation(values.std(ddof=1), values.mean()) == pytest.approx(0.5)
    block = np.array([[1.0, 0.0, 5.0], [3.0, 0.0, 5.0]])
    columns = coefficient_of_variation(block.std(axis=0, ddof=1), block.mean(axis=0))
    assert columns[0] == pytest.approx(np.sqrt(2) / 2) and np.isnan(columns[1]) and columns[2] == 0.0


def test_share_variability_known_numbers():
    shares = pd.DataFrame({
        "model": "m", "layer": "overall", "threshold": [0.01] * 6 + [0.05] * 2,
        "image_id": ["a1", "a2", "a3", "a1", "a2", "a3", "a1", "a2"],
        "identity": ["ann"] * 8, "gender": "female",
        "class": ["nose", "nose", "nose", "hair", "hair", "hair", "nose", "nose"],
        "share": [0.2, 0.4, 0.6, 0.0, 0.0, 0.0, 0.9, 0.1]})
    table = share_variability(shares, 0.01).set_index("part")
    assert table.loc["nose", "n_images"] == 3 and table.loc["nose", "cv"] == pytest.approx(0.5)
    assert np.isnan(table.loc["hair", "cv"])  # never relevant: undefined, not 0 or inf
    with pytest.raises(LeamError, match="threshold=0.1 not in the correlation shares; available: 0.01, 0.05"):
        share_variability(shares, 0.1)
    with pytest.raises(LeamError, match="lacks columns: share"):
        share_variability(shares.drop(columns="share"), 0.01)


def test_map_variability_known_numbers():
    # person p: cell 0 = (0.2, 0.4, 0.6) -> CV 0.5, cell 1 = (0.8, 0.6, 0.4) -> CV 1/3, cell 2 empty
    probs = np.array([[0.2, 0.8, 0.0], [0.4, 0.6, 0.0], [0.6, 0.4, 0.0], [0.5, 0.5, 0.0]])
    table = map_variability(probs, ["p", "p", "p", "q"]).set_index("identity")
    assert list(table.index) == ["p"]  # q has one image: skipped
    assert table.loc["p", "n_cells"] == 2
    assert table.loc["p", "map_cv"] == pytest.approx((0.5 + 0.2 / 0.6) / 2)
    assert table.loc["p", "map_cv_weighted"] == pytest.approx((0.2 + 0.2) / 1.0)
    face = np.array([[1.0, 0.0, 1.0]] * 4)  # only cell 0 (and empty cell 2) in the face region
    restricted = map_variability(probs, ["p", "p", "p", "q"], face_fraction=face).set_index("identity")
    assert restricted.loc["p", "n_cells"] == 1 and restricted.loc["p", "map_cv"] == pytest.approx(0.5)


def test_model_map_variability_summary_and_metrics_on_known_maps():
    # 2 x 2 cells of 2 x 2 pixels; person p as in test_map_variability_known_numbers plus an all-zero map
    cells = np.array([[0.2, 0.8, 0, 0], [0.4, 0.6, 0, 0], [0.6, 0.4, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0]])
    maps = np.stack([np.kron(c.reshape(2, 2), np.ones((2, 2))) for c in cells])[:, None].astype(np.float32)
    meta = pd.DataFrame({"identity": ["p", "p", "p", "q", "p"], "gender": ["female"] * 3 + ["male", "female"]})
    result = model_map_variability("m", maps, {"layers": ["overall"]}, meta, grid=2, negative_policy="clip",
                                   threshold=0.25, min_images=2)
    table = result.table
    assert list(table.columns) == PER_IDENTITY_COLUMNS and set(table.model) == {"m"}
    assert result.maps_excluded == 2 and result.persons_skipped == 1  # the empty map at 0.25 and 1.0; q
    full = table[table.threshold == 1.0].iloc[0]
    assert full.identity == "p" and full.gender == "female" and full.n_images == 3
    assert full.map_cv == pytest.approx((0.5 + 0.2 / 0.6) / 2)
    shares = pd.DataFrame({"model": "m", "layer": "overall", "identity": "p", "gender": "female", "level": "class",
                           "part": "nose", "n_images": 3, "mean_share": 0.5, "std_share": 0.1, "cv": [0.2]})
    summary, tests = summarise_variability(table, shares, 0.25, n_boot=20, seed=0)
    assert set(summary.measure) == {"map_cv", "map_cv_weighted", "share_cv"}
    doc = metrics_document(summary, tests, 0.25, 2, "clip", "all")
    entry = doc["models"]["m"]["overall"]
    assert entry["map_cv_full"]["all"]["mean"] == pytest.approx(full.map_cv) and entry["map_cv_full"]["all"]["n"] == 1
    assert entry["share_cv_class"] == {"nose": pytest.approx(0.2)} and doc["face_region"] == "all"


def test_gender_summary_and_test_separate_groups():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"model": "m", "layer": "overall", "gender": ["female"] * 20 + ["male"] * 20,
                          "cv": np.concatenate([rng.normal(1.0, 0.1, 20), rng.normal(0.5, 0.1, 20)])})
    summary = summarize_by_gender(table, ["model", "layer"], "cv", n_boot=200, seed=0).set_index("gender")
    assert summary.loc["all", "n"] == 40 and summary.loc["female", "ci_low"] > summary.loc["male", "ci_high"]
    test = gender_tests(table, ["model", "layer"], "cv").iloc[0]
    assert test.p_value < 1e-4 and test.rank_biserial > 0.9


def test_variability_stage_end_to_end(tmp_path, small_slice):
    from stages.variability import build_parser, main, run_stage

    fake = make_fake_pipeline(tmp_path, small_slice)
    rng = np.random.default_rng(1)
    shares = pd.DataFrame([{"model": fake["model"], "layer": "overall", "threshold": t, "image_id": image,
                            "identity": ident, "gender": gender, "level": level, "part": part, "share": rng.random(),
                            "area": 0.1}
                           for t in (0.01, 0.05) for image, ident, gender in
                           zip(fake["image_ids"], small_slice.identity, small_slice.gender)
                           for level, part in (("class", "nose"), ("class", "skin"), ("region", "eyes"))])
    shares.to_csv(tmp_path / "shares.csv", index=False)
    params = write_params(tmp_path, fake["model"])
    argv = ["--params", str(params), "--leam-dir", str(tmp_path / "leam"), "--shares", str(tmp_path / "shares.csv"),
            "--parsing-dir", str(tmp_path / "parsing"), "--aligned-dir", str(tmp_path / "aligned"),
            "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "variability.json")]
    assert run_stage("variability", main, build_parser(), argv) == 0
    per_identity = pd.read_csv(tmp_path / "out" / "per_identity.csv")
    # 8 persons x 3 layers x 2 variants; the person with the all-zero map keeps 2 usable images
    assert len(per_identity) == 8 * 3 * 2
    full = per_identity[per_identity.threshold == 1.0]
    assert full.map_cv.gt(0).all() and full.map_cv_weighted.lt(full.map_cv).all()
    # sparse top-1% maps may put no relevance on a person's face region: undefined, and only then
    assert (per_identity.map_cv.isna() == (per_identity.n_cells == 0)).all()
    # with n images a cell's CV is at most sqrt(n) (all mass in one image)
    assert (per_identity.map_cv.dropna() <= np.sqrt(per_identity.n_images[per_identity.map_cv.notna()]) + 1e-9).all()
    last = small_slice.identity.iloc[-1]
    assert (per_identity.loc[per_identity.identity == last, "n_images"] == 2).all()
    # the labels' face square (map pixels 20..91) fills cells 3..10 and half of cells 2 and 11: 10 x 10
    # cells are at least half face except the 4 corners (a quarter)
    assert per_identity.n_cells.max() == 100 - 4
    shares_cv = pd.read_csv(tmp_path / "out" / "shares_per_identity.csv")
    nose = shares[(shares.threshold == 0.01) & (shares.part == "nose") & (shares.identity == last)].share
    row = shares_cv[(shares_cv.identity == last) & (shares_cv.part == "nose")].iloc[0]
    assert row.cv == pytest.approx(nose.std(ddof=1) / nose.mean())
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary.gender) == {"all", "female", "male"} and set(summary.measure) == {"map_cv", "map_cv_weighted", "share_cv"}
    metrics = json.loads((tmp_path / "variability.json").read_text())
    overall = metrics["models"][fake["model"]]["overall"]
    assert overall["map_cv_full"]["all"]["n"] == 8
    assert set(overall["share_cv_class"]) == {"nose", "skin"} and set(overall["share_cv_region"]) == {"eyes"}
    top = per_identity[(per_identity.layer == "overall") & (per_identity.threshold == 0.01)]
    assert overall["map_cv_top"]["all"]["n"] == top.map_cv.notna().sum()
    assert overall["map_cv_top"]["all"]["mean"] == pytest.approx(top.map_cv.mean())


def test_variability_stage_missing_shares_is_one_line_error(tmp_path, small_slice, capsys):
    from stages.variability import build_parser, main, run_stage

    fake = make_fake_pipeline(tmp_path, small_slice)
    params = write_params(tmp_path, fake["model"])
    argv = ["--params", str(params), "--leam-dir", str(tmp_path / "leam"), "--shares", str(tmp_path / "none.csv")]
    assert run_stage("variability", main, build_parser(), argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.csv (run the correlate stage)" in err[0]
