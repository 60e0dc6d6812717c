"""The ``mesh`` parser: MediaPipe's 468-point face mesh and person segmentation rasterised into the frame.

Why: the landmark parser (``leam.parsing.landmarks``) guesses the forehead with a fixed fraction and draws
lips and nose from a few dlib points; it cannot see hair, ears or background. The face mesh covers the face up
to the hairline (its upper boundary), outlines brows, eyes, lips and nose with 10-40 points each, and the
selfie network separates the person from the background. Networks: :mod:`leam.parsing.face_mesh`.

Topology: which mesh vertices bound which region is MediaPipe's canonical face-mesh topology as published
in its PyPI package (Apache-2.0), read by ``tools/mediapipe_topology.py`` into
``leam/parsing/face_mesh_topology.json`` (source files and their sha256 recorded there): the 852 triangles
of ``FACE_LANDMARKS_TESSELATION`` and the edge sets ``FACEMESH_{LIPS, LEFT_EYE, RIGHT_EYE, LEFT_EYEBROW,
RIGHT_EYEBROW, FACE_OVAL, NOSE}``. Nothing here picks vertex indices by hand; chains and loops are
recovered from the published edges (:func:`region_chains`). MediaPipe's ``LEFT`` is the subject's left
(image right in a frontal photo), the canonical convention (tested on real faces).

Classes, drawn in this order (later wins), all in analysis-frame pixels:

* ``background`` where the person probability is below ``parsing.person_threshold``, else
  ``person_other`` (the union of hair, ears, hat, neck, cloth and jewellery: these models cannot tell them
  apart, ``leam.parsing.classes.UNIONS``);
* ``skin``: every mesh triangle (the face up to the mesh's upper boundary), minus the parts drawn after it;
* ``nose``: the convex hull of the ``FACEMESH_NOSE`` vertices (bridge and nostril outline);
* brows: the polygon of each brow's two published chains (upper and lower edge);
* eyes: the polygon of each eye's two chains (upper and lower lid);
* lips: outer chain minus inner chain, upper and lower halves (the chain nearer the top of the frame is
  upper); inner mouth: between the two inner chains (empty when the lips close).

A face is a counted discard when the mesh fails: ``mesh_not_finite``, ``mesh_low_presence`` (the graph's
face-presence score below ``parsing.mesh_min_presence``; MediaPipe's default is 0.5) or
``mesh_outside_frame`` (a point further than the landmark parser's ``outside_margin`` outside the frame).
Its labels stay 255 (not labelled); it is never replaced by another parser's labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from leam.errors import LeamError
from leam.parsing.classes import CLASS_ID, NOT_LABELLED
from leam.parsing.landmarks import LandmarkParserConfig, ParseResult

__all__ = ["MESH_AVAILABLE", "MESH_SETTINGS", "TOPOLOGY_FILE", "MeshTopology", "mesh_failures", "mesh_topology",
           "parse_mesh", "rasterise_mesh", "region_chains"]

TOPOLOGY_FILE = Path(__file__).with_name("face_mesh_topology.json")
MESH_SETTINGS = ("mesh_min_presence", "person_threshold")
"""The ``parsing.*`` keys that shape the mesh parser (recorded in ``classes.json``)."""
MESH_AVAILABLE = ["background", "person_other", "skin", "nose", "right_brow", "left_brow", "right_eye", "left_eye",
                  "upper_lip", "lower_lip", "inner_mouth"]
_SHIFT = 4  # fillPoly sub-pixel bits, as the landmark parser


def region_chains(edges: list[list[int]]) -> list[list[int]]:
    """Directed edges -> maximal vertex chains (a chain ends where a vertex does not have one edge in and
    one out); a closed loop comes back as one chain whose first vertex is repeated at its end."""
    successors: dict[int, list[int]] = {}
    indegree: dict[int, int] = {}
    for a, b in edges:
        successors.setdefault(a, []).append(b)
        indegree[b] = indegree.get(b, 0) + 1
        indegree.setdefault(a, indegree.get(a, 0))
    through = {v for v in indegree if indegree[v] == 1 and len(successors.get(v, [])) == 1}
    unused = {(a, b) for a, b in edges}
    chains = []
    for start in sorted(v for v in indegree if v not in through):
        for nxt in sorted(successors.get(start, [])):
            chain = [start, nxt]
            unused.discard((start, nxt))
            while chain[-1] in through:
                step = successors[chain[-1]][0]
                unused.discard((chain[-1], step))
                chain.append(step)
            chains.append(chain)
    while unused:  # closed loops: every vertex has one edge in and one out
        a, b = min(unused)
        chain = [a, b]
        unused.discard((a, b))
        while chain[-1] != a:
            step = successors[chain[-1]][0]
            unused.discard((chain[-1], step))
            chain.append(step)
        chains.append(chain)
    return chains


@dataclass(frozen=True)
class MeshTopology:
    """Index arrays of the published topology: ``triangles`` (852, 3); per region its chains."""

    triangles: np.ndarray
    nose: np.ndarray
    brows: dict[str, tuple[np.ndarray, np.ndarray]]
    eyes: dict[str, tuple[np.ndarray, np.ndarray]]
    lips: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    face_oval: np.ndarray
    source: dict


def _two_chains(name: str, edges: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """An eye's two lids (chains between the same corners) or a brow's two edges (two disjoint chains)."""
    chains = region_chains(edges)
    shared = len(chains) == 2 and chains[0][0] == chains[1][0] and chains[0][-1] == chains[1][-1]
    disjoint = len(chains) == 2 and not set(chains[0]) & set(chains[1])
    if not (shared or disjoint):
        raise LeamError(f"face-mesh region {name!r} is not two chains: {chains}")
    return np.array(chains[0]), np.array(chains[1])


@lru_cache(maxsize=1)
def mesh_topology(path: Path = TOPOLOGY_FILE) -> MeshTopology:
    """The topology file read once (``tools/mediapipe_topology.py`` writes it)."""
    try:
        document = json.loads(Path(path).read_text())
        regions, triangles = document["regions"], np.asarray(document["triangles"], dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise LeamError(f"face-mesh topology {path} is unreadable ({exc}); rewrite it with "
                        f"python -m tools.mediapipe_topology") from None
    lips = region_chains(regions["lips"])  # 4 chains: outer and inner, each from corner to corner twice
    corners: dict[tuple[int, int], list[np.ndarray]] = {}
    for chain in lips:
        corners.setdefault((chain[0], chain[-1]), []).append(np.array(chain))
    pairs = sorted(corners.values(), key=len)
    if len(lips) != 4 or [len(p) for p in pairs] != [2, 2]:
        raise LeamError(f"face-mesh lips are not two loops of two chains each: {lips}")
    oval = region_chains(regions["face_oval"])
    if len(oval) != 1 or oval[0][0] != oval[0][-1]:
        raise LeamError("face-mesh face oval is not one closed loop")
    nose = np.unique(np.asarray(regions["nose"]).reshape(-1))
    return MeshTopology(
        triangles=triangles, nose=nose,
        brows={side: _two_chains(f"{side}_eyebrow", regions[f"{side}_eyebrow"]) for side in ("left", "right")},
        eyes={side: _two_chains(f"{side}_eye", regions[f"{side}_eye"]) for side in ("left", "right")},
        lips=((pairs[0][0], pairs[0][1]), (pairs[1][0], pairs[1][1])),
        face_oval=np.array(oval[0][:-1]), source=document.get("source", {}))


def _lip_pairs(points: np.ndarray, topology: MeshTopology) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(outer, inner) lip chain pairs of one face: the outer pair encloses the larger area."""
    first, second = topology.lips
    areas = [abs(cv2.contourArea(_polygon(points, *pair).astype(np.float32))) for pair in (first, second)]
    return (first, second) if areas[0] >= areas[1] else (second, first)


def mesh_failures(points: np.ndarray, presence: np.ndarray, frame_size: int, min_presence: float,
                  outside_margin: float = LandmarkParserConfig.outside_margin) -> list[str]:
    """Discard reason per face ("" = usable): points (N, 468, 2) frame pixels, presence (N,) 0..1."""
    points = np.asarray(points, dtype=np.float64)
    finite = np.isfinite(points).all(axis=(1, 2)) & np.isfinite(presence)
    margin = outside_margin * frame_size
    safe = np.where(np.isfinite(points), points, 0.0)
    outside = ((safe < -margin) | (safe > frame_size - 1 + margin)).any(axis=(1, 2))
    low = ~(np.nan_to_num(presence, nan=0.0) >= min_presence)
    return ["mesh_not_finite" if not ok else "mesh_low_presence" if lo else "mesh_outside_frame" if out else ""
            for ok, lo, out in zip(finite, low, outside)]


def _polygon(points: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The closed polygon of two chains (shared corners, or two edges of a band): ``first``, then ``second``
    from the end nearer to ``first``'s end."""
    a, b = points[first], points[second]
    if np.linalg.norm(a[-1] - b[0]) < np.linalg.norm(a[-1] - b[-1]):
        b = b[::-1]
    return np.concatenate([a, b[::-1]], axis=0)


def _upper_first(points: np.ndarray, chains: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a, b = chains
    return (a, b) if points[a[1:-1], 1].mean() <= points[b[1:-1], 1].mean() else (b, a)


def rasterise_mesh(points: np.ndarray, person: np.ndarray, kept: np.ndarray, person_threshold: float,
                   topology: MeshTopology | None = None) -> np.ndarray:
    """Canonical labels (N, S, S) uint8 from mesh points (N, 468, 2) and person probability (N, S, S);
    rows with ``kept`` False stay NOT_LABELLED (255)."""
    topology = topology or mesh_topology()
    count, size = person.shape[0], person.shape[1]
    labels = np.full((count, size, size), NOT_LABELLED, dtype=np.uint8)
    scale = float(1 << _SHIFT)
    for row in np.flatnonzero(kept):
        pts = np.asarray(points[row], dtype=np.float64)
        outer, inner = _lip_pairs(pts, topology)
        fixed = np.round(pts * scale).astype(np.int32)
        canvas = labels[row]
        canvas[:] = np.where(person[row] >= person_threshold, CLASS_ID["person_other"], CLASS_ID["background"])
        for triangle in fixed[topology.triangles]:
            cv2.fillConvexPoly(canvas, triangle, CLASS_ID["skin"], lineType=cv2.LINE_8, shift=_SHIFT)
        nose = np.ascontiguousarray(cv2.convexHull(fixed[topology.nose])[:, 0])
        cv2.fillPoly(canvas, [nose], CLASS_ID["nose"], lineType=cv2.LINE_8, shift=_SHIFT)
        for side in ("right", "left"):
            for part, chains in (("brow", topology.brows[side]), ("eye", topology.eyes[side])):
                polygon = np.round(_polygon(pts, *chains) * scale).astype(np.int32)
                cv2.fillPoly(canvas, [polygon], CLASS_ID[f"{side}_{part}"], lineType=cv2.LINE_8, shift=_SHIFT)
        outer_upper, outer_lower = _upper_first(pts, outer)
        inner_upper, inner_lower = _upper_first(pts, inner)
        for name, first, second in (("upper_lip", outer_upper, inner_upper), ("lower_lip", outer_lower, inner_lower),
                                    ("inner_mouth", inner_upper, inner_lower)):
            polygon = np.round(_polygon(pts, first, second) * scale).astype(np.int32)
            cv2.fillPoly(canvas, [polygon], CLASS_ID[name], lineType=cv2.LINE_8, shift=_SHIFT)
    return labels


def parse_mesh(frames: np.ndarray, frame_padding: float, networks, min_presence: float,
               person_threshold: float) -> ParseResult:
    """Mesh labels of uint8 frames (N, S, S, 3); ``points`` of the result are the mesh (N, 468, 2) in frame px.

    ``networks``: a :class:`leam.parsing.face_mesh.MeshNetworks` (or anything with its ``run``).
    """
    output = networks.run(frames, frame_padding)
    size = np.asarray(frames).shape[1]
    reasons = mesh_failures(output.points, output.presence, size, min_presence)
    kept = np.array([reason == "" for reason in reasons], dtype=bool)
    labels = rasterise_mesh(output.points, output.person, kept, person_threshold)
    return ParseResult(labels=labels, kept=kept, reasons=reasons, available=list(MESH_AVAILABLE),
                       points=output.points.astype(np.float32))
