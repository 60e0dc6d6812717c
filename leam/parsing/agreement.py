"""How well two independent face models agree: mesh points vs dlib's 68 landmarks, and parser vs parser.

Both in analysis-frame pixels (S = ``align.frame_size``). The mesh (MediaPipe, ``leam.parsing.mesh``) and
dlib's shape predictor are separate detectors trained on separate data, so their agreement bounds how far
either can be off where both claim the same anatomical point.

Corresponding points, each taken from the published mesh topology (``leam.parsing.mesh.mesh_topology``)
rather than from a hand-made index table:

* eye corners (dlib 36/39 subject's right eye outer/inner, 42/45 left inner/outer): the two corners of each
  ``FACEMESH_*_EYE`` loop, the outer one being the one farther from the face's vertical midline;
* mouth corners (dlib 48/54): the two corners of the outer lip loop, image-left one = 48;
* nose tip (dlib 30): mesh vertex :data:`NOSE_TIP` = 4, the ``FACEMESH_NOSE`` vertex nearest the camera
  (smallest depth z) on 53 of 94 sampled faces of the default sample (the rest: 45 / 275, the alae next to it,
  on turned faces);
* jaw line (dlib 0-16): distance of each dlib jaw point to the mesh's face-oval polygon (not point to point:
  the two contours are sampled at different places along the same curve).

Per-class agreement between two label maps is the intersection over union per face, averaged over the faces
where at least one of the two has the class (``class_iou``).
"""

from __future__ import annotations

import cv2
import numpy as np

from leam.parsing.classes import CLASS_ID

__all__ = ["NOSE_TIP", "POINT_PAIRS", "class_iou", "corresponding_points", "landmark_agreement"]

NOSE_TIP = 4
POINT_PAIRS = ("right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer", "nose_tip",
               "mouth_right", "mouth_left")
_DLIB = {"right_eye_outer": 36, "right_eye_inner": 39, "left_eye_inner": 42, "left_eye_outer": 45, "nose_tip": 30,
         "mouth_right": 48, "mouth_left": 54}
JAW = np.arange(0, 17)


def _corners(points: np.ndarray, chain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two end vertices of a chain, image-left one first, per face: (N, 2) each."""
    a, b = points[:, chain[0]], points[:, chain[-1]]
    left_first = a[:, :1] <= b[:, :1]
    return np.where(left_first, a, b), np.where(left_first, b, a)


def corresponding_points(mesh: np.ndarray, topology) -> dict[str, np.ndarray]:
    """Mesh points (N, 468, >=2) -> ``POINT_PAIRS`` name -> (N, 2) frame pixels."""
    mesh = np.asarray(mesh, dtype=np.float64)[..., :2]
    right_outer, right_inner = _corners(mesh, topology.eyes["right"][0])   # subject's right = image left
    left_inner, left_outer = _corners(mesh, topology.eyes["left"][0])
    lips = max(topology.lips, key=lambda pair: np.ptp(mesh[:, pair[0], 0], axis=1).mean())  # outer: the wider pair
    mouth_right, mouth_left = _corners(mesh, lips[0])
    return {"right_eye_outer": right_outer, "right_eye_inner": right_inner, "left_eye_inner": left_inner,
            "left_eye_outer": left_outer, "nose_tip": mesh[:, NOSE_TIP], "mouth_right": mouth_right,
            "mouth_left": mouth_left}


def _summary(distances: np.ndarray) -> dict[str, float]:
    distances = distances[np.isfinite(distances)]
    if distances.size == 0:
        return {"median": float("nan"), "mean": float("nan"), "p90": float("nan")}
    return {"median": round(float(np.median(distances)), 3), "mean": round(float(distances.mean()), 3),
            "p90": round(float(np.percentile(distances, 90)), 3)}


def landmark_agreement(mesh: np.ndarray, landmarks: np.ndarray, topology) -> dict:
    """Pixel distances mesh vs dlib for faces (N, 468, >=2) and (N, 68, 2): per point pair and the jaw line,
    each ``{median, mean, p90}`` over faces; ``all_points`` pools the seven point pairs."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    mesh_points = corresponding_points(mesh, topology)
    per_pair = {name: np.linalg.norm(mesh_points[name] - landmarks[:, _DLIB[name]], axis=1) for name in POINT_PAIRS}
    oval = np.asarray(mesh, dtype=np.float64)[:, topology.face_oval, :2].astype(np.float32)
    jaw = np.array([[abs(cv2.pointPolygonTest(np.ascontiguousarray(oval[i]).reshape(-1, 1, 2), (float(x), float(y)), True)) for x, y in landmarks[i, JAW]]
                    for i in range(len(landmarks))]).reshape(len(landmarks), len(JAW))
    result = {name: _summary(values) for name, values in per_pair.items()}
    result["all_points"] = _summary(np.concatenate(list(per_pair.values())))
    result["jaw_line"] = _summary(jaw.reshape(-1))
    return result


def class_iou(first: np.ndarray, second: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Mean per-face IoU of each class between label maps (N, S, S) of the same faces (canonical ids).

    A face counts for a class when either map has it; ``mean`` averages the classes."""
    first, second = np.asarray(first), np.asarray(second)
    result = {}
    for name in classes:
        a, b = first == CLASS_ID[name], second == CLASS_ID[name]
        union = (a | b).sum(axis=(1, 2))
        inter = (a & b).sum(axis=(1, 2))
        present = union > 0
        result[name] = round(float((inter[present] / union[present]).mean()), 4) if present.any() else float("nan")
    values = [v for v in result.values() if np.isfinite(v)]
    result["mean"] = round(float(np.mean(values)), 4) if values else float("nan")
    return result
