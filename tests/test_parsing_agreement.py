"""Agreement figures: mesh points vs dlib landmarks (pixels) and per-class IoU, on constructed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from leam.parsing.agreement import NOSE_TIP, POINT_PAIRS, class_iou, corresponding_points, landmark_agreement
from leam.parsing.classes import CLASS_ID
from leam.parsing.mesh import mesh_topology


def _mesh_on_dlib(landmarks: np.ndarray) -> np.ndarray:
    """A mesh whose corresponding points sit exactly on the dlib points and whose face oval is the jaw line
    mirrored upwards (so every jaw point lies on the oval polygon)."""
    topology = mesh_topology()
    mesh = np.zeros((len(landmarks), 468, 2))
    mesh[:] = landmarks.mean(1, keepdims=True)
    oval = topology.face_oval
    jaw = landmarks[:, :17]
    ring = np.concatenate([jaw, jaw[:, ::-1] * [1, -1] + [0, 2 * jaw[:, :, 1].min()]], axis=1)  # (N, 34, 2)
    order = np.linspace(0, 33, len(oval)).round().astype(int)
    mesh[:, oval] = ring[:, order]
    for (first, second), dlib in ((topology.eyes["right"], (36, 39)), (topology.eyes["left"], (42, 45)),
                                  (max(topology.lips, key=len), (48, 54))):
        mesh[:, first[0]], mesh[:, first[-1]] = landmarks[:, dlib[0]], landmarks[:, dlib[1]]
    mesh[:, NOSE_TIP] = landmarks[:, 30]
    return mesh


def test_points_on_the_dlib_points_agree_to_zero_and_shifts_are_measured():
    rng = np.random.default_rng(0)
    base = np.stack(np.meshgrid(np.linspace(60, 160, 17), [150.0]), -1).reshape(17, 2)
    landmarks = np.zeros((3, 68, 2))
    landmarks[:, :17] = base + rng.normal(0, 1, (3, 17, 2))
    landmarks[:, 36], landmarks[:, 39], landmarks[:, 42], landmarks[:, 45] = [80, 100], [100, 100], [124, 100], [144, 100]
    landmarks[:, 30], landmarks[:, 48], landmarks[:, 54] = [112, 125], [95, 140], [129, 140]
    topology = mesh_topology()
    mesh = _mesh_on_dlib(landmarks)
    assert corresponding_points(mesh, topology)["right_eye_outer"][0].tolist() == [80, 100]
    agreement = landmark_agreement(mesh, landmarks, topology)
    assert set(POINT_PAIRS) <= set(agreement)
    for name in POINT_PAIRS:
        assert agreement[name]["median"] == pytest.approx(0, abs=1e-9)
    assert agreement["jaw_line"]["p90"] < 1e-6
    shifted = mesh.copy()
    shifted[:, NOSE_TIP] += [3.0, 4.0]
    assert landmark_agreement(shifted, landmarks, topology)["nose_tip"]["median"] == pytest.approx(5.0)


def test_class_iou_per_face_and_mean():
    a = np.zeros((2, 4, 4), np.uint8)
    b = np.zeros((2, 4, 4), np.uint8)
    a[0, :2, :2] = CLASS_ID["nose"]           # 4 pixels
    b[0, :2, :1] = CLASS_ID["nose"]           # 2 of them: IoU 0.5
    a[1, 0, 0] = b[1, 0, 0] = CLASS_ID["nose"]  # IoU 1
    iou = class_iou(a, b, ["nose", "left_eye"])
    assert iou["nose"] == 0.75 and np.isnan(iou["left_eye"]) and iou["mean"] == 0.75
