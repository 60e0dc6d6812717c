"""Face parsing in the analysis frame: one canonical class table, two backends.

* ``landmarks`` (default, offline): polygons from dlib's 68 landmarks (``leam.parsing.landmarks``).
* ``farl`` (optional extra): facer's FaRL ``farl/celebm/448`` network (``leam.parsing.farl``).

Both return a :class:`ParseResult` with canonical ids (``leam.parsing.classes``), 255 = not labelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leam.errors import check_choice
from leam.parsing.classes import CLASSES, NOT_LABELLED, class_table
from leam.parsing.landmarks import SETTINGS as LANDMARK_SETTINGS
from leam.parsing.landmarks import LandmarkParserConfig, ParseResult, parse_landmarks

BACKENDS = ("landmarks", "farl")

__all__ = ["BACKENDS", "CLASSES", "LANDMARK_SETTINGS", "NOT_LABELLED", "LandmarkParserConfig", "ParseResult",
           "class_table", "label_overlay", "label_panel", "parse_frames", "parse_landmarks"]


def parse_frames(backend: str, frames: np.ndarray, landmarks: np.ndarray, settings: dict,
                 cache_dir: Path = Path("data/models/farl")) -> ParseResult:
    """Parse aligned frames (N, S, S, 3) uint8 with landmarks (N, 68, 2) using ``parsing.*`` settings."""
    check_choice("parsing.backend", backend, BACKENDS)
    if backend == "landmarks":
        config = LandmarkParserConfig(**{key: float(settings[key]) for key in LANDMARK_SETTINGS if key in settings})
        return parse_landmarks(landmarks, frames.shape[1], config)
    from leam.parsing.farl import load_farl_parser  # lazy: torch-heavy, optional extra
    parser = load_farl_parser(settings.get("farl_model_path", ""), settings.get("farl_url", ""),
                              settings.get("farl_sha256", ""), cache_dir,
                              device=settings.get("device", "cpu"), batch_size=int(settings.get("batch_size", 8)))
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
