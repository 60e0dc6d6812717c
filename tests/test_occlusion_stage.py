"""End-to-end test of `python -m stages.occlusion` on real aligned faces with two tiny source/target models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from leam import occlusion as occ
from leam.models import registry
from leam.models.registry import ModelSpec
from stages import occlusion as stage
from tests.occlusion_faces import TINY_INPUT, TinyFaceNet, occlusion_faces, smooth_maps, tiny_input_warp  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ["tiny_a", "tiny_b"]


def _tiny_spec(name: str, seed: int) -> ModelSpec:
    return ModelSpec(name=name, description="random tiny CNN (test)", input_size=TINY_INPUT, embedding_dim=32,
                     layers=("features.2",), load=lambda weights_dir: TinyFaceNet(seed), input_warp=tiny_input_warp)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, occlusion_faces: dict) -> Path:  # noqa: F811
    """A repository-shaped folder: params.yaml, data/aligned, data/leam/<tiny model> for two models."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["models"] = MODELS
    params["occlusion"].update({"thresholds": [0.02, 0.05], "maps": ["overall", "features.2"], "random_repeats": 1, "random": ["uniform", "face", "blob"],
                                "batch_size": 8, "max_images_per_identity": 0, "fill": "black"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    frames, identities, ids = occlusion_faces["frames"], occlusion_faces["identity"], occlusion_faces["image_id"]
    aligned = tmp_path / "data" / "aligned"
    aligned.mkdir(parents=True)
    np.save(aligned / "frames.npy", frames)
    np.save(aligned / "landmarks.npy", occlusion_faces["landmarks"])
    genders = ["female" if i == identities[0] else "male" for i in identities]
    pd.DataFrame({"image_id": ids, "identity": identities, "gender": genders, "row": range(len(ids))}).to_csv(
        aligned / "index.csv", index=False)
    first = {}
    for image_id, identity in zip(ids, identities):
        first.setdefault(identity, []).append(image_id)
    refs = [first[i][1] if first[i][0] == image_id else first[i][0] for image_id, i in zip(ids, identities)]
    for seed, model in enumerate(MODELS):
        folder = tmp_path / "data" / "leam" / model
        folder.mkdir(parents=True)
        maps = np.stack([smooth_maps(len(ids), seed=seed), smooth_maps(len(ids), seed=seed + 10)], axis=1)
        np.save(folder / "maps.npy", maps.astype(np.float16))
        (folder / "layers.json").write_text(json.dumps({"model": model, "layers": ["features.2", "overall"]}))
        pd.DataFrame({"row": range(len(ids)), "image_id": ids, "identity": identities, "gender": genders,
                      "reference_image_id": refs, "cosine": 0.5}).to_csv(folder / "meta.csv", index=False)
        monkeypatch.setitem(registry._REGISTRY, model, _tiny_spec(model, seed))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv: list[str] | None = None) -> int:
    return stage.run_stage("occlusion", stage.main, stage.build_parser(), argv or [])


def test_stage_writes_tidy_tables_metrics_and_examples(workspace: Path) -> None:
    assert _run() == 0
    out = workspace / "data" / "occlusion"
    drops = pd.read_csv(out / "drops.csv")
    assert list(drops.columns) == occ.DROP_COLUMNS
    n = len(pd.read_csv(workspace / "data" / "aligned" / "index.csv"))
    thresholds = [0.01, 0.02, 0.05]  # occlusion.thresholds plus the top-level threshold
    assert sorted(drops.threshold.unique()) == thresholds
    # per target: (own 2 maps + the other source's overall map + 3 random kinds x 1 repeat) per image and threshold
    assert len(drops) == 2 * len(thresholds) * (2 + 1 + 3) * n
    transfer = drops[(drops.kind == "leam") & (drops.source != drops.target)]
    assert set(transfer["map"]) == {"overall"} and len(transfer) == 2 * len(thresholds) * n
    assert (drops.groupby(["target", "image_id"])["clean"].nunique() == 1).all()  # one clean cosine per image
    assert set(drops.kind) == {"leam", "random_uniform", "random_face", "random_blob"}
    summary = pd.read_csv(out / "summary.csv")
    assert set(zip(summary[summary.kind == "leam"].source, summary[summary.kind == "leam"].target)) == {
        (s, t) for s in MODELS for t in MODELS}
    assert (summary.ci_low <= summary["mean"] + 1e-12).all() and (summary["mean"] <= summary.ci_high + 1e-12).all()
    assert set(pd.read_csv(out / "by_gender.csv").gender) == {"female", "male"}
    tests = pd.read_csv(out / "tests.csv")
    assert set(tests.gender) == {"all", "female", "male"} and set(tests.random) == {"random_uniform", "random_face", "random_blob"}
    metrics = json.loads((workspace / "metrics" / "occlusion.json").read_text())
    assert metrics["threshold"] == 0.01 and metrics["n_images"] == n
    head = metrics["models"]["tiny_a"]
    expected = drops[(drops.source == "tiny_a") & (drops.target == "tiny_a") & (drops["map"] == "overall")
                     & (drops.threshold == 0.01)]["drop"].mean()
    assert head["leam_drop"] == pytest.approx(expected)
    assert {"random_uniform_drop", "random_face_drop", "p_vs_random_uniform", "leam_ci"} <= set(head)
    pooled = tests[(tests.source == "tiny_a") & (tests.target == "tiny_a") & (tests["map"] == "overall")
                   & (tests.threshold == 0.01) & (tests.random == "random_uniform") & (tests.gender == "all")]
    assert len(pooled) == 1 and head["p_vs_random_uniform"] == pytest.approx(pooled.p_value.iloc[0], nan_ok=True)
    assert set(metrics["transfer"]) == {f"{s}__{t}" for s in MODELS for t in MODELS}
    examples = sorted((out / "examples").glob("*.png"))
    assert len(examples) == 3
    assert cv2.imread(str(examples[0])).shape == (224, 3 * 224, 3)


def test_stage_threshold_and_transfer_params(workspace: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["threshold"] = 0.02
    params["occlusion"].update({"transfer": False, "random": ["uniform"], "random_repeats": 1, "maps": ["overall"],
                                "thresholds": [0.05]})
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert _run() == 0
    drops = pd.read_csv("data/occlusion/drops.csv")
    leam = drops[drops.kind == "leam"]
    assert (leam.source == leam.target).all() and sorted(drops.threshold.unique()) == [0.02, 0.05]
    metrics = json.loads(Path("metrics/occlusion.json").read_text())
    assert metrics["threshold"] == 0.02 and set(metrics["transfer"]) == {"tiny_a__tiny_a", "tiny_b__tiny_b"}


@pytest.mark.parametrize("change, message", [
    ({"fill": "red"}, "occlusion.fill='red' is not valid"),
    ({"maps": ["layer9"]}, "occlusion.maps[0]='layer9' (the transfer map) is not computed for 'tiny_a'"),
    ({"maps": ["overall", "layer9"]}, "'layer9', computed for no model"),
    ({"device": "gpu"}, "occlusion.device='gpu' is not valid"),
    ({"random": ["uniform", "stripes"]}, "occlusion.random[1]='stripes' is not valid; choose one of: uniform, face, blob"),
])
def test_stage_bad_params_are_one_line_errors(workspace: Path, capsys, change: dict, message: str) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["occlusion"].update(change)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert _run() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_stage_missing_maps_names_the_stage_to_run(workspace: Path, capsys) -> None:
    Path("data/leam/tiny_b/maps.npy").unlink()
    assert _run() == 2
    assert "dvc repro leam@tiny_b" in capsys.readouterr().err


def test_stage_skips_a_layer_one_source_lacks(workspace: Path) -> None:
    Path("data/leam/tiny_b/layers.json").write_text(json.dumps({"model": "tiny_b", "layers": ["conv9", "overall"]}))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["occlusion"].update({"random": ["uniform"], "thresholds": [0.05]})
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert _run() == 0
    drops = pd.read_csv("data/occlusion/drops.csv")
    leam = drops[drops.kind == "leam"]
    assert set(leam[leam.source == "tiny_a"]["map"]) == {"overall", "features.2"}
    assert set(leam[leam.source == "tiny_b"]["map"]) == {"overall"}
    metrics = json.loads(Path("metrics/occlusion.json").read_text())
    assert metrics["maps_skipped"] == {"tiny_b": ["features.2"]}
