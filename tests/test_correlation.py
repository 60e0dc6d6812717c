"""LEAM-parser correlation: exact shares on a hand-built map set, invariants on random ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leam.errors import LeamError
from leam.metrics.correlation import (
    NUM_PARTS,
    PARTS,
    LabelFractions,
    ParserReference,
    class_shares,
    compare_parsers,
    comparison_document,
    correlate_models,
    iter_correlations,
    label_fractions,
    metrics_document,
    paired_class_shares,
    summarise_shares,
    tidy_shares,
)
from leam.parsing.classes import CLASS_ID, NOT_LABELLED
from leam.topt import effective_thresholds, top_count

NOSE, SKIN, EYE = CLASS_ID["nose"], CLASS_ID["skin"], CLASS_ID["right_eye"]
NL = PARTS.index("not_labelled")


def _known_set():
    """Frame 8x8, grid 4 (2x2 pixels a cell). Left half nose, right half skin, cell (0,0) not labelled,
    top row of cell (1,1) eye. Image 0: layer 0 has four ranked cells, layer 1 is flat (all ties).
    Image 1: an all-zero map (must be NaN, not ranked)."""
    labels = np.full((2, 8, 8), SKIN, dtype=np.uint8)
    labels[:, :, :4] = NOSE
    labels[:, :2, :2] = NOT_LABELLED
    labels[:, 2, 2:4] = EYE
    maps = np.zeros((2, 2, 4, 4), dtype=np.float16)
    maps[0, 0, 0, 0], maps[0, 0, 1, 1], maps[0, 0, 0, 3], maps[0, 0, 3, 3] = 4, 3, 2, 1
    maps[0, 1] = 1.0
    return labels, maps


def test_label_fractions_are_exact_cell_areas():
    labels, _ = _known_set()
    fractions = label_fractions(labels, grid=4)
    assert fractions.shape == (2, 16, NUM_PARTS)
    np.testing.assert_allclose(fractions.sum(axis=2), 1.0)
    assert fractions[0, 0, NL] == 1.0                       # cell (0,0)
    assert fractions[0, 5, EYE] == 0.5 and fractions[0, 5, NOSE] == 0.5   # cell (1,1)
    assert fractions[0, 3, SKIN] == 1.0


def test_label_fractions_computed_by_chunk_equal_the_cached_ones_on_real_faces(real_faces):
    """Beyond max_bytes (the paper's scale) LabelFractions computes each slice when asked; on real landmark-parser
    labels of 6 faces the slices, their cell means and the class shares equal the cached fractions bit for bit."""
    from leam.parsing import parse_landmarks

    labels = parse_landmarks(real_faces["landmarks"], 224).labels
    rows = np.array([5, 0, 3, 1, 4, 2])
    cached, lazy = LabelFractions(labels, rows, 112), LabelFractions(labels, rows, 112, max_bytes=0, chunk=4)
    assert cached._all is not None and lazy._all is None and cached.shape == lazy.shape == (6, 112 * 112, NUM_PARTS)
    np.testing.assert_array_equal(cached[0:6], label_fractions(labels[rows], 112))
    np.testing.assert_array_equal(lazy[2:5], cached[2:5])
    np.testing.assert_array_equal(lazy.area, cached.area)
    maps = np.random.default_rng(0).random((6, 2, 112, 112)).astype(np.float16)
    for fractions in (cached, lazy):
        shares, valid = class_shares(maps, fractions, [0.01, 1.0], chunk=4)
        np.testing.assert_array_equal(shares, class_shares(maps, label_fractions(labels[rows], 112), [0.01, 1.0])[0])
    with pytest.raises(TypeError):
        lazy[0]


def test_iter_correlations_yields_each_model_as_correlate_models_concatenates_them():
    labels, maps = _known_set()
    meta = pd.DataFrame({"image_id": ["a", "b"], "identity": ["p", "q"], "gender": ["male", "female"]})
    index = pd.DataFrame({"image_id": ["a", "b"], "row": [0, 1], "parsed": [True, True]})
    outputs = [("m1", maps, {"layers": ["x", "overall"]}, meta), ("m2", maps[:, :1], {"layers": ["overall"]}, meta)]
    parts = list(iter_correlations(iter(outputs), labels, index, [0.25, 1.0], ["skin", "nose"]))
    whole = correlate_models(iter(outputs), labels, index, [0.25, 1.0], ["skin", "nose"])
    assert [list(p.counts) for p in parts] == [["m1"], ["m2"]]
    pd.testing.assert_frame_equal(pd.concat([p.per_image for p in parts], ignore_index=True), whole.per_image)
    pd.testing.assert_frame_equal(pd.concat([p.exclusions for p in parts], ignore_index=True), whole.exclusions)
    assert set(parts[0].per_image.model) == {"m1"} and whole.counts["m2"]["layers"] == ["overall"]


def test_shares_on_known_maps():
    labels, maps = _known_set()
    shares, valid = class_shares(maps, label_fractions(labels, 4), [1 / 16, 0.125, 0.25, 1.0])
    assert valid.tolist() == [[True, True], [False, False]]
    assert np.isnan(shares[1]).all()
    ranked, flat = shares[0, 0], shares[0, 1]
    # top 1 of 16: the not-labelled cell
    assert ranked[0, NL] == 1.0
    # top 4 (t=0.25): not-labelled, half eye/half nose, skin, skin
    expected = np.zeros(NUM_PARTS)
    expected[[NL, EYE, NOSE, SKIN]] = [0.25, 0.125, 0.125, 0.5]
    np.testing.assert_allclose(ranked[2], expected)
    # t=1: weighted by activation 4:3:2:1
    expected[[NL, EYE, NOSE, SKIN]] = [0.4, 0.15, 0.15, 0.3]
    np.testing.assert_allclose(ranked[3], expected, atol=1e-6)
    # flat map, t=0.125 -> 2 cells; ties go to the first cells in row-major order: (0,0) and (0,1)
    expected[:] = 0
    expected[[NL, NOSE]] = 0.5
    np.testing.assert_allclose(flat[1], expected)
    # flat map at t=1 reads the label areas: 4 + 2 + 26 + 32 pixels of 64
    expected[[NL, EYE, NOSE, SKIN]] = np.array([4, 2, 26, 32]) / 64
    np.testing.assert_allclose(flat[3], expected, atol=1e-6)


def test_shares_sum_to_one_with_ties_and_not_labelled():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 2, 6, 8, 10, 12, 13, NOT_LABELLED], size=(5, 16, 16)).astype(np.uint8)
    maps = rng.integers(0, 4, size=(5, 3, 8, 8)).astype(np.float16)   # many ties
    maps[:, :, 0, 0] = 5                                              # never all-zero
    thresholds = effective_thresholds([0.01, 0.05, 0.10, 0.25, 1.0], 0.01)
    shares, valid = class_shares(maps, label_fractions(labels, 8), thresholds, chunk=2)
    assert valid.all()
    np.testing.assert_allclose(shares.sum(axis=3), 1.0, atol=1e-5)
    # chunking never changes the result
    again, _ = class_shares(maps, label_fractions(labels, 8, chunk=3), thresholds, chunk=5)
    np.testing.assert_array_equal(shares, again)


def test_thresholds_and_counts():
    assert effective_thresholds([0.05, 0.01, 1.0, 0.05], 0.10) == [0.01, 0.05, 0.1, 1.0]
    assert top_count(0.025, 100) == 3 and top_count(0.01, 12544) == 125 and top_count(1e-6, 16) == 1
    with pytest.raises(LeamError, match="thresholds=0.0 is not a valid top-t fraction"):
        effective_thresholds([0.0, 0.5], 0.01)
    with pytest.raises(LeamError, match="unknown class ids"):
        label_fractions(np.full((1, 4, 4), 40, dtype=np.uint8), 2)
    with pytest.raises(LeamError, match="do not match"):
        class_shares(np.ones((1, 1, 4, 4)), np.ones((1, 4, NUM_PARTS)), [0.5])


def test_tables_uniform_map_has_enrichment_one():
    labels, maps = _known_set()
    maps[0, 1] = 1.0
    fractions = label_fractions(labels, 4)
    thresholds = [0.25, 1.0]
    shares, _ = class_shares(maps, fractions, thresholds)
    meta = pd.DataFrame({"image_id": ["a/1", "b/1"], "identity": ["a", "b"], "gender": ["female", "male"]})
    table = tidy_shares(shares, fractions.mean(axis=1), meta, "toy", ["layer1", "overall"], thresholds,
                        keep_classes=["skin", "nose", "right_eye"])
    assert set(table.image_id) == {"a/1"}                 # the all-zero map of b/1 is dropped
    sums = table.groupby(["layer", "threshold", "level"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)
    tables = summarise_shares(table, n_boot=50, seed=0)
    flat = tables["enrichment"].query("layer == 'overall' and threshold == 1.0 and mean_area > 0")
    np.testing.assert_allclose(flat["enrichment"].to_numpy(), 1.0, atol=1e-5)
    ranked = tables["enrichment"].query("layer == 'layer1' and threshold == 0.25 and part == 'not_labelled'")
    assert ranked["enrichment"].iloc[0] == pytest.approx(0.25 / (4 / 64))
    doc = metrics_document(tables["shares_summary"], 0.25, {"toy": {"images": 1}})
    assert doc["shares"]["toy"]["layer1"]["not_labelled"] == 0.25
    # flat overall map at t=0.25: ties -> first row of cells: not labelled, nose, skin, skin
    assert doc["headline"]["toy"]["nose"] == 0.25 and doc["headline"]["toy"]["skin"] == 0.5
    assert set(doc["headline"]["toy"]) == {"nose", "eyes", "brows", "mouth", "skin", "not_labelled"}


def test_correlate_models_matches_images_by_id_and_counts_exclusions():
    """Parser rows in another order than the maps, one map image the parser did not label, one without mass."""
    labels, maps = _known_set()
    parsing_index = pd.DataFrame({"image_id": ["b/1", "a/1", "c/1"], "row": [1, 0, 1], "parsed": [1, 1, 0]})
    meta = pd.DataFrame({"row": [0, 1, 2], "image_id": ["a/1", "b/1", "c/1"], "identity": ["a", "b", "c"],
                         "gender": ["female", "male", "male"]})
    three = np.concatenate([maps, maps[:1]])            # c/1 has a map but no labels
    outputs = [(name, three, {"layers": ["layer1", "overall"]}, meta) for name in ("m1", "m2")]
    result = correlate_models(iter(outputs), labels, parsing_index, [0.25, 1.0], ["skin", "nose", "right_eye"])
    assert result.counts["m1"] == {"images": 2, "no_parser_labels": 1, "maps_without_mass": 2,
                                   "layers": ["layer1", "overall"]}
    assert result.exclusions.to_dict("list") == {
        "model": ["m1"] * 3 + ["m2"] * 3, "layer": ["*", "layer1", "overall"] * 2,
        "image_id": ["c/1", "b/1", "b/1"] * 2, "reason": ["no_parser_labels"] + ["map_without_mass"] * 2 + [
            "no_parser_labels"] + ["map_without_mass"] * 2}
    alone = tidy_shares(*_shares_of(labels[:1], maps[:1], [0.25, 1.0]), meta.iloc[:1], "m1", ["layer1", "overall"],
                        [0.25, 1.0], ["skin", "nose", "right_eye"])
    pd.testing.assert_frame_equal(result.per_image[result.per_image.model == "m1"].reset_index(drop=True), alone)
    assert result.per_image.model.value_counts().to_dict() == {"m1": len(alone), "m2": len(alone)}
    with pytest.raises(LeamError, match="no image of model 'm3' has parser labels"):
        correlate_models([("m3", maps[:1], {"layers": ["overall"]}, meta.iloc[2:])], labels, parsing_index, [1.0], [])


def test_paired_shares_rank_once_and_match_each_parser_alone():
    """The reference labels (nose relabelled skin) get the same top cells: nose share moves to skin exactly."""
    labels, maps = _known_set()
    reference = np.where(labels == NOSE, SKIN, labels).astype(np.uint8)
    thresholds = [0.125, 0.25, 1.0]
    shares, reference_shares, valid = paired_class_shares(maps, label_fractions(labels, 4), label_fractions(reference, 4),
                                                          thresholds, at=0.25, chunk=1)
    alone, alone_valid = class_shares(maps, label_fractions(labels, 4), thresholds)
    np.testing.assert_array_equal(shares, alone)
    np.testing.assert_array_equal(valid, alone_valid)
    np.testing.assert_array_equal(reference_shares, class_shares(maps, label_fractions(reference, 4), [0.25])[0][:, :, 0])
    ranked = reference_shares[0, 0]                             # top 4: not-labelled, eye/nose -> eye/skin, skin, skin
    assert ranked[NOSE] == 0 and ranked[SKIN] == pytest.approx(0.625) and ranked[EYE] == pytest.approx(0.125)
    assert np.isnan(reference_shares[1]).all()
    with pytest.raises(LeamError, match="comparison threshold 0.5 is not one of"):
        paired_class_shares(maps, label_fractions(labels, 4), label_fractions(reference, 4), thresholds, at=0.5)


def test_parser_comparison_uses_the_faces_both_parsers_labelled():
    """Three images, the reference discards one: the comparison covers the other two, same shares as alone."""
    labels, maps = _known_set()
    labels = np.concatenate([labels, labels[:1]])
    maps = np.concatenate([maps, maps[:1] * 0 + 1])[:, :1]          # image 1 has no mass; image 2 a flat map
    meta = pd.DataFrame({"row": [0, 1, 2], "image_id": ["a/1", "b/1", "c/1"], "identity": ["a", "b", "c"],
                         "gender": ["female", "male", "male"]})
    index = pd.DataFrame({"image_id": meta.image_id, "row": [0, 1, 2], "parsed": [1, 1, 1]})
    reference = np.where(labels == NOSE, SKIN, labels).astype(np.uint8)
    parsed = np.array([True, True, False])                                # the reference lost c/1
    classes = ["skin", "nose", "right_eye"]
    ref = ParserReference("landmarks", reference, parsed, 0.25, classes)
    result = correlate_models([("m", maps, {"layers": ["overall"]}, meta)], labels, index, [0.25, 1.0], classes, ref)
    plain = correlate_models([("m", maps, {"layers": ["overall"]}, meta)], labels, index, [0.25, 1.0], classes)
    pd.testing.assert_frame_equal(result.per_image, plain.per_image)
    assert result.counts["m"]["compared_images"] == 2 and plain.comparison is None
    compared = result.comparison
    assert set(compared.image_id) == {"a/1"}                             # b/1: no mass; c/1: no reference labels
    main = plain.per_image.query("threshold == 0.25 and image_id == 'a/1'").reset_index(drop=True)
    np.testing.assert_array_equal(compared.share.to_numpy(), main.share.to_numpy())
    nose = compared.query("level == 'region' and part == 'nose'").iloc[0]
    assert nose.share == pytest.approx(0.125) and nose.reference_share == 0
    table = compare_parsers(compared, n_boot=20, seed=0)
    row = table.query("level == 'region' and part == 'skin'").iloc[0]
    assert row.n == 1 and row.difference == pytest.approx(-0.125) and row.ci_low == row.ci_high == row.difference
    assert list(table.columns[-3:]) == ["difference", "ci_low", "ci_high"]
    doc = comparison_document(table, "mesh", "landmarks", result.counts)
    assert doc["images"] == {"m": 2} and doc["reference"] == "landmarks" and doc["threshold"] == 0.25
    assert doc["headline"]["m"]["nose"] == {"share": 0.125, "reference": 0.0, "difference": 0.125, "ci": [0.125, 0.125]}


def _shares_of(labels, maps, thresholds):
    fractions = label_fractions(labels, maps.shape[2])
    return class_shares(maps, fractions, thresholds)[0], fractions.mean(axis=1)


def test_parse_and_correlate_stages_end_to_end(aligned_small, tmp_path, capsys, monkeypatch):
    """Real faces through both stages; a map peaked on the nose tip puts most top-1% mass on the nose."""
    import json

    import yaml

    from leam.io import load_params
    from leam.models import registry
    from stages import correlate, parse
    from tests.conftest import REPO_ROOT
    from tests.test_similarity import fake_model_spec

    registry.available_models()
    monkeypatch.setitem(registry._REGISTRY, "toy", fake_model_spec("toy"))  # `models` must be registered

    result, rows = aligned_small
    n = 8
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    np.save(aligned / "frames.npy", result.frames[:n])
    np.save(aligned / "landmarks.npy", result.landmarks[:n])
    index = pd.DataFrame({"row": np.arange(n), "image_id": [f"{r.identity}/{i}" for i, r in enumerate(rows.head(n).itertuples())],
                          "identity": rows.identity[:n], "gender": rows.gender[:n]})
    index.to_csv(aligned / "index.csv", index=False)
    params = load_params(REPO_ROOT / "params.yaml")
    params.update(models=["toy"], correlate={"thresholds": [0.05, 1.0], "bootstrap": 20})
    params["parsing"]["backend"] = "landmarks"  # the parser needing no npm package; the mesh one: test_parsing_mesh
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(tmp_path / "params.yaml")]
    assert parse.run_stage("parse", parse.main, parse.build_parser(),
                           common + ["--aligned-dir", str(aligned), "--out", str(tmp_path / "parsing"),
                                     "--metrics", str(tmp_path / "parsing.json")]) == 0
    labels = np.load(tmp_path / "parsing" / "labels.npy")
    assert labels.shape == (n, 224, 224) and len(list((tmp_path / "parsing" / "examples").glob("*.png"))) > 0

    grid = 112
    yy, xx = np.mgrid[0:grid, 0:grid]
    tip = (result.landmarks[:n, 30] - 0.5) / 2                      # frame pixels -> map cells
    blob = np.exp(-((xx - tip[:, :1, None]) ** 2 + (yy - tip[:, 1:, None]) ** 2) / 2.0)
    leam_dir = tmp_path / "leam" / "toy"
    leam_dir.mkdir(parents=True)
    np.save(leam_dir / "maps.npy", np.stack([blob, blob], 1).astype(np.float16))
    (leam_dir / "layers.json").write_text(json.dumps({"layers": ["layer1", "overall"]}))
    index.assign(reference_image_id="", cosine=1.0).to_csv(leam_dir / "meta.csv", index=False)
    out = tmp_path / "corr"
    assert correlate.run_stage("correlate", correlate.main, correlate.build_parser(),
                               common + ["--leam-dir", str(tmp_path / "leam"), "--parsing-dir", str(tmp_path / "parsing"),
                                         "--out", str(out), "--metrics", str(tmp_path / "corr.json"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "corr.json").read_text())
    assert doc["thresholds"] == [0.01, 0.05, 1.0]
    headline = doc["headline"]["toy"]
    assert headline["nose"] > 0.5 and headline["nose"] == max(headline.values())
    per_image = pd.read_csv(out / "shares_per_image.csv")
    sums = per_image[per_image.level == "class"].groupby(["image_id", "layer", "threshold"]).share.sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-4)
    enrichment = pd.read_csv(out / "enrichment.csv").query("part == 'nose' and threshold == 0.01")
    assert (enrichment.enrichment > 10).all()
    assert "landmarks ran no reference parser" in doc["parser_comparison"]["skipped"]
    assert pd.read_csv(out / "parser_comparison.csv").empty

    # a reference parser beside the labels (as the mesh backend writes it): here the landmark labels, nose -> skin
    parsing = tmp_path / "parsing"
    np.save(parsing / "reference_labels.npy", np.where(labels == CLASS_ID["nose"], SKIN, labels).astype(np.uint8))
    classes = json.loads((parsing / "classes.json").read_text())
    classes["reference"] = {"backend": "landmarks", "labels": "reference_labels.npy", "available": classes["available"]}
    (parsing / "classes.json").write_text(json.dumps(classes))
    parsed_index = pd.read_csv(parsing / "index.csv")
    parsed_index.assign(reference_parsed=parsed_index.parsed).to_csv(parsing / "index.csv", index=False)
    assert correlate.run_stage("correlate", correlate.main, correlate.build_parser(),
                               common + ["--leam-dir", str(tmp_path / "leam"), "--parsing-dir", str(parsing),
                                         "--out", str(out), "--metrics", str(tmp_path / "corr.json"), "--no-progress"]) == 0
    moved = json.loads((tmp_path / "corr.json").read_text())["parser_comparison"]
    assert moved["images"] == {"toy": n} and moved["headline"]["toy"]["nose"]["reference"] == 0
    assert moved["headline"]["toy"]["nose"]["share"] == pytest.approx(headline["nose"], abs=1e-4)
    comparison = pd.read_csv(out / "parser_comparison.csv")
    assert set(comparison.layer) == {"layer1", "overall"} and set(comparison.threshold) == {0.01}
    skin = comparison.query("layer == 'overall' and level == 'region' and part == 'skin'").iloc[0]
    assert skin.difference == pytest.approx(headline["skin"] - (headline["skin"] + headline["nose"]), abs=1e-4)

    capsys.readouterr()
    code = correlate.run_stage("correlate", correlate.main, correlate.build_parser(),
                               common + ["--parsing-dir", str(tmp_path / "missing")])
    assert code == 2 and capsys.readouterr().err.strip().count("\n") == 0
