"""End-to-end test of `python -m stages.explain` on real aligned faces with two small seeded source/target networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leam.models import registry
from leam.placement import cached_geometries, cell_table
from stages import explain as stage
from tests.attribution_nets import LAYERS, SmallNet, small_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ["small_a", "small_b"]
METHODS = ["leam", "leam_opposes", "layercam_fusion", "gradcam", "saliency", "occlusion", "random_face"]
FRACTIONS = [0.02, 0.1, 0.5]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_faces: dict) -> Path:
    """A repository-shaped folder: params.yaml, data/aligned, data/leam/<model>/{maps.npy, layers.json, meta.csv}."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["models"] = MODELS
    params["explain"].update({"sources": MODELS, "targets": MODELS, "methods": METHODS, "maps": ["overall", "conv1"],
                              "fractions": FRACTIONS, "patch": 96, "stride": 64, "max_identities": 2,
                              "max_images_per_identity": 0, "batch_size": 8, "bootstrap": 50, "device": "cpu"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    index = real_faces["index"]
    aligned = tmp_path / "data" / "aligned"
    aligned.mkdir(parents=True)
    np.save(aligned / "frames.npy", real_faces["frames"])
    np.save(aligned / "landmarks.npy", real_faces["landmarks"])
    ids, identities = index.image_id.tolist(), index.identity.tolist()
    pd.DataFrame({"image_id": ids, "identity": identities, "gender": index.gender, "row": range(len(ids))}).to_csv(
        aligned / "index.csv", index=False)
    refs = [ids[i + 1] if i % 2 == 0 else ids[i - 1] for i in range(len(ids))]  # two photos per identity
    for seed, model in enumerate(MODELS):
        spec = small_spec(seed, model)
        cells = cell_table(cached_geometries(SmallNet(seed), LAYERS, spec.input_size, "receptive_field")) if seed else None
        folder = tmp_path / "data" / "leam" / model
        folder.mkdir(parents=True)
        np.save(folder / "maps.npy", np.zeros((len(ids), len(LAYERS) + 1, 4, 4), dtype=np.float16))
        (folder / "layers.json").write_text(json.dumps({"model": model, "layers": [*LAYERS, "overall"], "cells": cells,
                                                        "negative_activations": "keep"}))
        pd.DataFrame({"row": range(len(ids)), "image_id": ids, "identity": identities, "gender": index.gender,
                      "reference_image_id": refs, "cosine": 0.5}).to_csv(folder / "meta.csv", index=False)
        monkeypatch.setitem(registry._REGISTRY, model, spec)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run() -> int:
    return stage.run_stage("explain", stage.main, stage.build_parser(), [])


def test_stage_writes_curves_aucs_tests_and_metrics(workspace: Path) -> None:
    assert _run() == 0
    out = workspace / "data" / "explain"
    per_image = pd.read_csv(out / "auc_per_image.csv")
    assert per_image.image_id.nunique() == 4 and per_image.identity.nunique() == 2  # 2 identities x 2 photos
    labels = {"leam:overall", "leam:conv1", "leam_opposes:overall", "leam_opposes:conv1", "layercam_fusion",
              "gradcam:overall", "gradcam:conv1", "saliency", "occlusion", "random_face"}
    assert set(per_image.method) == labels
    assert set(zip(per_image.source, per_image.target)) == {(s, t) for s in MODELS for t in MODELS}
    assert len(per_image) == 4 * 4 * len(labels) * 2  # photos x (source, target) x maps x curves
    curves = pd.read_csv(out / "curves.csv")
    assert sorted(curves.fraction.unique()) == [0.0, *FRACTIONS]
    assert (curves.ci_low <= curves["mean"] + 1e-9).all() and (curves["mean"] <= curves.ci_high + 1e-9).all()
    tests = pd.read_csv(out / "tests.csv")
    assert set(tests.method) == labels - {"leam:overall"} and set(tests.reference) == {"leam:overall"}
    signs = pd.read_csv(out / "signs.csv")
    assert set(signs.method) == {"leam:overall", "leam:conv1"}  # layercam_fusion_opposes is not requested
    metrics = json.loads((workspace / "metrics" / "explain.json").read_text())
    assert set(metrics["models"]) == set(MODELS) and set(metrics["transfer"]) == {"small_a__small_b", "small_b__small_a"}
    block = metrics["models"]["small_a"]["deletion"]
    auc = pd.read_csv(out / "auc.csv")
    own = auc[(auc.source == "small_a") & (auc.target == "small_a") & (auc.curve == "deletion")]
    assert block["winner"] == own.sort_values("mean").method.iloc[0] and block["methods"] == len(labels)
    assert block["auc"]["saliency"]["mean"] == pytest.approx(own.set_index("method").loc["saliency", "mean"])
    assert 0 < metrics["face_share"] < 1 and metrics["n_images"] == 4 and metrics["fractions"] == FRACTIONS
    wide = pd.read_csv(out / "plots" / "insertion" / "small_b.csv")
    assert list(wide.columns)[0] == "fraction" and "leam_overall" in wide.columns and len(wide) == 4
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["curves_s"]) == set(MODELS) and "occlusion" in timing["maps_s"]


@pytest.mark.parametrize("change, message", [
    ({"sources": ["small_a", "dlib_resnet"]}, "explain.sources has 'dlib_resnet', not in models (small_a, small_b)"),
    ({"targets": ["nobody"]}, "explain.targets has 'nobody', not a registered model"),
    ({"methods": ["leam", "lime"]}, "explain.methods[1]='lime' is not valid; choose one of: leam, leam_opposes"),
    ({"fill": "red"}, "explain.fill='red' is not valid"),
    ({"fractions": [0.1, 1.5]}, "explain.fractions[1]=1.5 is not valid"),
    ({"patch": 500}, "explain.patch=500 must be in 1..224"),
])
def test_stage_bad_params_are_one_line_errors(workspace: Path, capsys, change: dict, message: str) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["explain"].update(change)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert _run() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
