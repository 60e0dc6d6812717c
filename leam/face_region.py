"""The face region, defined once: which analysis-frame pixels (or map cells) count as the face.

Why one definition: similarity's optional face mask, variability's averaging region and occlusion's
random baselines all ask "is this pixel face?"; each used to answer differently (parser classes, the
landmark hull, a labels helper only the tests used). The policy is the top-level param ``face_region``:

- ``landmarks`` (default): the filled convex hull of the 68 dlib landmarks, jaw line to brows (no
  forehead, no hair). It needs only the alignment, so it is the same whichever parser runs.
- ``parsing``: every parser class except :data:`NON_FACE_CLASSES` (skin with the parser's forehead,
  brows, eyes, ears, nose, mouth, lips, hair, eyeglasses); unlabelled pixels (255) are not face.
- ``all``: every pixel of the frame.

Regions are bool arrays (N, S, S) in analysis-frame pixels (S = ``align.frame_size``). At a map grid G
coarser than the frame (S a multiple of G) a cell is face when at least half of its frame pixels are
(:func:`pool_region`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from leam import io
from leam.errors import LeamError, check_choice

__all__ = ["FACE_REGIONS", "NON_FACE_CLASSES", "face_class_ids", "face_region", "landmark_hull", "parser_face",
           "pool_region", "read_face_region"]

FACE_REGIONS = ("landmarks", "parsing", "all")
"""Valid values of the ``face_region`` param (see the module docstring)."""

NON_FACE_CLASSES = ("background", "neck", "cloth", "hat", "earring", "necklace", "person_other")
"""Canonical parser classes outside the face region; every other labelled class counts as face. The mesh
parser's union ``person_other`` (hair, ears, neck, cloth... outside the face mesh) is not face: its face is
the mesh."""


def face_class_ids() -> set[int]:
    """Canonical class ids (``leam.parsing.classes``) that ``parsing`` counts as face."""
    from leam.parsing.classes import CLASSES

    return {index for index, name in enumerate(CLASSES) if name not in NON_FACE_CLASSES}


def landmark_hull(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) bool: the filled convex hull of the 68 frame landmarks (N, 68, 2) (x, y pixels)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    regions = np.zeros((landmarks.shape[0], size, size), dtype=np.uint8)
    for index, points in enumerate(landmarks):  # one polygon fill per image, not per pixel
        cv2.fillConvexPoly(regions[index], cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return regions.astype(bool)


def parser_face(labels: np.ndarray) -> np.ndarray:
    """(N, S, S) bool: parser labels (N, S, S) in :func:`face_class_ids` (255 = unlabelled is not face)."""
    labels = np.asarray(labels)
    return np.isin(labels, np.asarray(sorted(face_class_ids()), dtype=labels.dtype))


def pool_region(region: np.ndarray, grid: int) -> np.ndarray:
    """(N, S, S) bool -> (N, grid, grid) bool: a cell is face when at least half of its pixels are."""
    region = np.asarray(region, dtype=bool)
    n, size, _ = region.shape
    if grid <= 0 or size % grid:
        raise LeamError(f"face region frame {size} is not a multiple of the map grid {grid}")
    step = size // grid
    return region.reshape(n, grid, step, grid, step).mean(axis=(2, 4)) >= 0.5


def face_region(policy: str, size: int, *, landmarks: np.ndarray | None = None, labels: np.ndarray | None = None,
                grid: int | None = None) -> np.ndarray:
    """The face region of N images under ``policy``, (N, S, S) bool, or (N, grid, grid) when ``grid`` is given.

    ``landmarks`` (N, 68, 2) are needed for ``landmarks`` (and give N for ``all``), ``labels`` (N, S, S)
    for ``parsing``.
    """
    check_choice("face_region", policy, FACE_REGIONS)
    if policy == "parsing":
        if labels is None:
            raise LeamError("face_region=parsing needs the parser labels (run the parse stage)")
        region = parser_face(labels)
    else:
        if landmarks is None:
            raise LeamError(f"face_region={policy} needs the aligned landmarks (run the align stage)")
        region = (landmark_hull(landmarks, size) if policy == "landmarks"
                  else np.ones((len(landmarks), size, size), dtype=bool))
    if region.shape[1:] != (size, size):
        raise LeamError(f"face region is {region.shape[1]}x{region.shape[2]} pixels, expected the {size}x{size} frame")
    return region if grid is None else pool_region(region, grid)


def read_face_region(policy: str, image_ids, aligned_dir: str | Path, parsing_dir: str | Path,
                     frame_size: int, grid: int | None = None) -> np.ndarray:
    """The face region (``leam.face_region``, ``policy`` = params ``face_region``) of ``image_ids``, in order.

    (N, S, S) bool in analysis-frame pixels (S = ``frame_size``), or (N, grid, grid) cells when ``grid`` is
    given. ``landmarks`` and ``all`` read ``index.csv`` and ``landmarks.npy`` of the aligned data,
    ``parsing`` the parser labels.
    """
    if policy == "parsing":
        labels = io.read_face_labels(parsing_dir, aligned_dir, image_ids)
        return face_region(policy, frame_size, labels=labels, grid=grid)
    index_path, landmarks_path = Path(aligned_dir) / "index.csv", Path(aligned_dir) / "landmarks.npy"
    for path in (index_path, landmarks_path):
        if not path.is_file():
            raise LeamError(f"face region needs {path} (run `dvc repro align`)")
    index = io.read_csv_checked(index_path, ("image_id",), stage="align")
    landmarks = io.load_npy(landmarks_path, stage="align")
    if landmarks.shape != (len(index), 68, 2):
        raise LeamError(f"{landmarks_path} must be ({len(index)}, 68, 2) for {index_path}, got {landmarks.shape}")
    return face_region(policy, frame_size, landmarks=landmarks[io.aligned_rows(index, image_ids, index_path)], grid=grid)
