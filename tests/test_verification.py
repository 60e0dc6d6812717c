"""Embedding aligned frames and verification metrics: real faces for behaviour, tiny inputs for edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import dlib
import numpy as np
import pandas as pd
import pytest
import yaml

from leam.assets import dlib_model_path
from leam.embedding import embed_frames
from leam.models.registry import get_spec
from leam.models.verification import evaluate, roc_auc, sample_pairs
from stages import models as models_stage
from stages.weights import convert_dlib_resnet
from tests.test_dlib_resnet import detected_faces, pick_small_photos

FRAME_SIZE, PADDING = 224, 0.5


@pytest.fixture(scope="module")
def aligned(mirror_manifest, faces_mirror) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A small aligned set in the format of data/aligned/ (frames, landmarks, index), built with dlib chips.

    Landmarks are re-predicted inside the frame from the face box every dlib chip of this padding shares.
    """
    photos = pick_small_photos(mirror_manifest, faces_mirror)
    faces = detected_faces(tuple(photos.abspath))
    predictor = dlib.shape_predictor(str(dlib_model_path("landmarks68")))
    low, high = (np.array([PADDING, 1 + PADDING]) / (1 + 2 * PADDING) * (FRAME_SIZE - 1)).round().astype(int)
    frames, landmarks = [], []
    for _, image, shape in faces:
        frame = dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, FRAME_SIZE, PADDING))
        points = predictor(frame, dlib.rectangle(low, low, high, high))
        frames.append(frame)
        landmarks.append([(p.x, p.y) for p in points.parts()])
    rows = photos.iloc[[position for position, _, _ in faces]].reset_index(drop=True)
    index = pd.DataFrame({"image_id": rows.identity + "/" + rows.file.map(lambda f: Path(f).stem),
                          "identity": rows.identity, "gender": rows.gender, "path": rows.file,
                          "sha256": rows.sha256, "source": "sample", "row": np.arange(len(rows))})
    return np.stack(frames), np.asarray(landmarks, dtype=np.float32), index


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    (folder / "weights.json").write_text(json.dumps({"dlib_resnet": convert_dlib_resnet(folder)}))
    return folder


def test_embeddings_separate_identities(aligned, weights_dir):
    frames, landmarks, index = aligned
    spec = get_spec("dlib_resnet")
    embeddings = embed_frames(spec.load(weights_dir), spec, frames, landmarks, PADDING, batch_size=8).numpy()
    assert embeddings.shape == (len(frames), 128) and embeddings.dtype == np.float32
    pairs = sample_pairs(index.identity, seed=0)
    metrics = evaluate(embeddings, pairs, index.gender, spec.verification_threshold)
    print({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    assert metrics["pairs_same"] == sum(c * (c - 1) // 2 for c in index.identity.value_counts())
    assert metrics["auc_cosine"] > 0.9 and metrics["auc_euclidean"] > 0.9
    assert metrics["mean_cosine_same"] > metrics["mean_cosine_different"] + 0.1
    assert metrics["balanced_accuracy"] > 0.8
    assert {"female", "male"} <= set(metrics) and metrics["female"]["pairs_same"] > 0
    # batch size must not change results
    again = embed_frames(spec.load(weights_dir), spec, frames[:5], landmarks[:5], PADDING, batch_size=2)
    np.testing.assert_allclose(again.numpy(), embeddings[:5], atol=1e-5)


def test_sample_pairs_counts_and_seeding():
    identities = np.repeat(["a", "b", "c", "d", "e"], [3, 2, 4, 1, 5])
    n = len(identities)
    everything = sample_pairs(identities)
    assert len(everything) == n * (n - 1) // 2
    assert everything.same.sum() == 3 + 1 + 6 + 0 + 10
    assert (everything.a < everything.b).all()
    sampled = sample_pairs(identities, seed=3, max_different=20)
    different = sampled[~sampled.same]
    assert len(different) == 20 and sampled.same.sum() == 20
    assert not different.duplicated(["a", "b"]).any()
    assert (identities[different.a] != identities[different.b]).all()
    pd.testing.assert_frame_equal(sampled, sample_pairs(identities, seed=3, max_different=20))
    assert not sampled.equals(sample_pairs(identities, seed=4, max_different=20))


def test_roc_auc_edge_cases():
    labels = np.array([True, True, False, False])
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert roc_auc(np.ones(4), labels) == 0.5
    assert roc_auc(np.array([0.9, 0.1, 0.5, 0.2]), labels) == 0.5
    assert np.isnan(roc_auc(np.ones(3), np.array([True, True, True])))


@pytest.fixture
def stage_dir(tmp_path, aligned, weights_dir) -> Path:
    frames, landmarks, index = (part[:12] for part in aligned)  # 4 identities keep the stage test fast
    (tmp_path / "aligned").mkdir()
    np.save(tmp_path / "aligned" / "frames.npy", frames)
    np.save(tmp_path / "aligned" / "landmarks.npy", landmarks)
    index.to_csv(tmp_path / "aligned" / "index.csv", index=False)
    params = {"seed": 0, "models": ["dlib_resnet"], "align": {"frame_size": FRAME_SIZE, "padding": PADDING},
              "verification": {"batch_size": 16, "max_different_pairs": 40}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_models_stage(folder: Path, weights_dir: Path, *extra: str) -> int:
    return models_stage.run_stage("models", models_stage.main, models_stage.build_parser(), [
        "--params", str(folder / "params.yaml"), "--weights", str(weights_dir), "--aligned", str(folder / "aligned"),
        "--embeddings", str(folder / "embeddings"), "--metrics", str(folder / "models.json"),
        "--pairs", str(folder / "pairs.csv"), *extra])


def test_models_stage_writes_contract_outputs(stage_dir, weights_dir, aligned):
    assert run_models_stage(stage_dir, weights_dir) == 0
    embeddings = np.load(stage_dir / "embeddings" / "dlib_resnet.npy")
    assert embeddings.shape == (12, 128)
    metrics = json.loads((stage_dir / "models.json").read_text())["dlib_resnet"]
    assert metrics["pairs_different"] == 40 and metrics["auc_cosine"] > 0.8 and metrics["threshold"] == 0.6
    pairs = pd.read_csv(stage_dir / "pairs.csv")
    assert len(pairs) == metrics["pairs_same"] + 40
    assert {"image_id_a", "image_id_b", "same", "cosine_dlib_resnet", "euclidean_dlib_resnet"} <= set(pairs.columns)
    assert pairs.loc[pairs.same, "cosine_dlib_resnet"].mean() == pytest.approx(metrics["mean_cosine_same"])


def test_models_stage_bad_input_is_one_line(stage_dir, weights_dir, capsys):
    np.save(stage_dir / "aligned" / "frames.npy", np.zeros((2, 100, 100, 3), np.uint8))
    assert run_models_stage(stage_dir, weights_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "align.frame_size=224" in err[0]
    (stage_dir / "aligned" / "index.csv").unlink()
    assert run_models_stage(stage_dir, weights_dir) == 2
    assert "index.csv" in capsys.readouterr().err


def test_list_shows_layer_shapes(weights_dir, capsys, tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    code = models_stage.run_stage("models", models_stage.main, models_stage.build_parser(),
                                  ["--params", str(tmp_path / "params.yaml"), "--weights", str(weights_dir), "--list"])
    out = capsys.readouterr().out
    assert code == 0 and "dlib_resnet: input 150x150, embedding 128" in out
    assert "stem         32x72x72" in out and "layer5.0     256x2x2" in out
