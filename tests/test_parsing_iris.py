"""The iris and meet graphs of human-models on real aligned faces: equal to TensorFlow.js; eye crops; bad files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leam.errors import ChecksumError, LeamError
from leam.frame import transform_points, warp
from leam.models import human_models
from leam.models.tfjs_import import load_tfjs
from leam.parsing import face_mesh, iris
from tests.tfjs_reference import run_tfjs, tfjs_ready


def _eye_crops(frames: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
    """(2N, 3, 64, 64) RGB 0..255: each face's image-left eye, then its mirrored image-right eye."""
    matrices = iris.eye_crop_matrices(iris.eye_corners(landmarks)).reshape(-1, 2, 3)
    batch = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return warp(batch.repeat_interleave(2, 0), matrices, iris.IRIS_INPUT)


def _meet_input(frames: np.ndarray) -> torch.Tensor:
    batch = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return F.interpolate(batch, size=face_mesh.MEET_INPUT, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["iris", "meet"])
def test_interpreter_and_compiled_equal_tfjs_on_real_faces(name, parser_graphs, real_faces, tmp_path):
    if not tfjs_ready():
        pytest.skip("node or @tensorflow/tfjs (tools/tfjs_reference) unavailable")
    frames, landmarks = real_faces["frames"][::2], real_faces["landmarks"][::2]  # 3 faces of 3 identities
    if name == "iris":
        inputs, output = _eye_crops(frames, landmarks), iris.IRIS_GRAPH["output"]
        compiled = iris.load_iris(parser_graphs)
    else:  # meet's file has a fixed batch of 1: TF.js runs the faces one by one, the executor all at once
        inputs, output = _meet_input(frames), face_mesh.MEET_GRAPH["logits"]
        compiled = face_mesh.load_meet(parser_graphs)
    graph = load_tfjs(parser_graphs / f"{name}.json", output, input_scale=1 / 255)
    reference = run_tfjs(parser_graphs / f"{name}.json", (inputs / 255).permute(0, 2, 3, 1).numpy(), [output],
                         tmp_path)[output]
    with torch.no_grad():
        for label, module in (("interpreter", graph), ("compiled", compiled)):
            ours = module(inputs).numpy().transpose(0, 2, 3, 1).reshape(reference.shape)
            relative = np.abs(ours - reference).max() / np.abs(reference).max()
            print(f"{name} {label} {output}: max |torch - tfjs| / max |tfjs| = {relative:.2e}")
            assert relative < 1e-4
    if name == "iris":  # the graph's points lie inside its crop and the iris centre near the crop centre
        points = reference.reshape(len(inputs), -1, 3)[..., :2]
        assert points.min() > 0 and points.max() < iris.IRIS_INPUT
        centre = points[:, iris.IRIS_CONTOUR_POINTS]
        assert np.abs(centre - (iris.IRIS_INPUT - 1) / 2).max() < 8
    else:  # the person (channel 1) covers the frame centre, not its top corners
        person = torch.from_numpy(reference).softmax(-1)[..., face_mesh.MEET_GRAPH["person_channel"]].numpy()
        assert (person[:, 60:84, 110:146] > 0.5).mean() > 0.95 and (person[:, :10, :20] < 0.5).mean() > 0.9


def test_run_iris_points_follow_dlib_eyes(parser_graphs, real_faces):
    frames, landmarks = real_faces["frames"][::2], real_faces["landmarks"][::2]
    result = iris.run_iris(iris.load_iris(parser_graphs), frames, landmarks, batch_size=2)
    assert result.contour.shape == (3, 2, 71, 2) and result.iris.shape == (3, 2, 5, 2)
    corners = iris.eye_corners(landmarks)  # (left, right) in the image; contour 0 = outer, 8 = inner corner
    # dlib and MediaPipe place a corner 1-5 px apart (S = 224); an eye fed mirrored the wrong way puts them ~20 px off
    outer = np.stack([corners[:, 0, 0], corners[:, 1, 1]], 1)
    inner = np.stack([corners[:, 0, 1], corners[:, 1, 0]], 1)
    assert np.linalg.norm(result.contour[:, :, 0] - outer, axis=-1).max() < 6
    assert np.linalg.norm(result.contour[:, :, 8] - inner, axis=-1).max() < 6
    eye_centres = np.stack([landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1)], 1)
    assert np.linalg.norm(result.iris[:, :, 0] - eye_centres, axis=-1).max() < 6


def test_run_meet_person_probability_in_the_frame(parser_graphs, real_faces):
    frames = real_faces["frames"][::2]
    person = face_mesh.run_meet(face_mesh.load_meet(parser_graphs), frames, batch_size=2)
    assert person.shape == frames.shape[:3] and person.dtype == np.float32
    assert person.min() >= 0 and person.max() <= 1
    assert (person[:, 90:134, 90:134] > 0.5).mean() > 0.95 and person[:, :16, :16].mean() < 0.5


def test_eye_crop_matrices_level_and_mirror():
    corners = np.array([[[[10.0, 20.0], [30.0, 20.0]], [[50.0, 22.0], [70.0, 18.0]]]])  # one face, two eyes
    matrices = iris.eye_crop_matrices(corners)
    middle, half = (iris.IRIS_INPUT - 1) / 2, iris.IRIS_INPUT / iris.IRIS_ENLARGE / 2
    left_eye = transform_points(corners[0, 0], matrices[0, 0])
    np.testing.assert_allclose(left_eye, [[middle - half, middle], [middle + half, middle]], atol=1e-9)
    right_eye = transform_points(corners[0, 1], matrices[0, 1])  # mirrored: its right corner comes first
    np.testing.assert_allclose(right_eye, [[middle + half, middle], [middle - half, middle]], atol=1e-9)
    with pytest.raises(LeamError, match=r"\(N, 68, 2\)"):
        iris.eye_corners(np.zeros((1, 5, 2)))


def test_missing_or_corrupt_iris_or_meet_graph_is_a_one_line_error(parser_graphs, tmp_path):
    folder = tmp_path / "graphs"
    shutil.copytree(parser_graphs, folder)
    (folder / "meet.bin").write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match=r"meet\.bin") as error:
        face_mesh.load_meet(folder)
    assert "\n" not in str(error.value)
    (folder / "iris.json").unlink()
    with pytest.raises(LeamError, match=r"iris\.json is missing") as error:
        iris.load_iris(folder)
    assert "\n" not in str(error.value)
    with pytest.raises(LeamError, match="unknown parser graph 'eyes'") as error:
        human_models.fetch_parser_graphs(folder, graphs=("eyes",))
    assert "\n" not in str(error.value)
