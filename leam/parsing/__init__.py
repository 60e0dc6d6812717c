"""Face parsing in the analysis frame: one canonical class table, three backends.

* ``landmarks`` (offline, no npm): polygons from dlib's 68 landmarks (``leam.parsing.landmarks``).
* ``mesh`` (default; offline once the npm package is cached): MediaPipe's 468-point face mesh + selfie person segmentation
  (``leam.parsing.mesh``, networks in ``leam.parsing.face_mesh``).
* ``farl`` (optional extra): facer's FaRL ``farl/celebm/448`` network (``leam.parsing.farl``).

Both return a :class:`ParseResult` with canonical ids (``leam.parsing.classes``), 255 = not labelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leam.errors import LeamError, check_choice
from leam.parsing.classes import CLASSES, NOT_LABELLED, class_table
from leam.parsing.landmarks import SETTINGS as LANDMARK_SETTINGS
from leam.parsing.landmarks import LandmarkParserConfig, ParseResult, parse_landmarks

BACKENDS = ("landmarks", "mesh", "farl")

__all__ = ["BACKENDS", "CLASSES", "LANDMARK_SETTINGS", "NOT_LABELLED", "LandmarkParserConfig", "ParseResult",
           "class_table", "label_overlay", "label_panel", "parse_frames", "parse_landmarks"]


def parse_frames(backend: str, frames: np.ndarray, landmarks: np.ndarray, settings: dict,
                 cache_dir: Path = Path("data/models/farl"), frame_padding: float | None = None,
                 mesh_graphs: Path | None = None) -> ParseResult:
    """Parse aligned frames (N, S, S, 3) uint8 with landmarks (N, 68, 2) using ``parsing.*`` settings.

    ``mesh`` also needs the frame's dlib-chip ``frame_padding`` (``align.padding``) and the folder of its
    graphs (``leam.models.human_models.fetch_parser_graphs``).
    """
    check_choice("parsing.backend", backend, BACKENDS)
    if backend == "landmarks":
        config = LandmarkParserConfig(**{key: float(settings[key]) for key in LANDMARK_SETTINGS if key in settings})
        return parse_landmarks(landmarks, frames.shape[1], config)
    if backend == "mesh":
        if frame_padding is None or mesh_graphs is None:
            raise LeamError("parsing.backend=mesh needs the frame padding (align.padding) and the folder of its "
                            "graphs (leam.models.human_models.fetch_parser_graphs)")
        from leam.parsing.face_mesh import load_mesh_networks  # lazy: torch
        from leam.parsing.mesh import parse_mesh
        networks = load_mesh_networks(mesh_graphs, batch_size=int(settings["batch_size"]))
        return parse_mesh(frames, frame_padding, networks, float(settings["mesh_min_presence"]),
                          float(settings["person_threshold"]))
    from leam.parsing.farl import load_farl_parser  # lazy: torch-heavy, optional extra
    parser = load_farl_parser(settings.get("farl_model_path", ""), settings.get("farl_url", ""),
                              settings.get("farl_sha256", ""), cache_dir,
                              device=settings["device"], batch_size=int(settings.get("batch_size", 8)))
    return parser.parse(frames, landmarks)


def label_overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB (S, S, 3) uint8 frame with each labelled pixel blended with its class colour; 255 stays as is."""
    from leam.parsing.classes import PALETTE

    out = np.asarray(frame).copy()
    labelled = labels != NOT_LABELLED
    colours = PALETTE[np.minimum(labels[labelled], len(PALETTE) - 1)].astype(np.float32)
    out[labelled] = np.round((1 - alpha) * out[labelled] + alpha * colours).astype(np.uint8)
    return out


def label_panel(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The frame and its :func:`label_overlay` side by side: RGB (S, 2S, 3) uint8, for the report's examples."""
    frame = np.asarray(frame)
    return np.concatenate([frame, label_overlay(frame, labels)], axis=1)
