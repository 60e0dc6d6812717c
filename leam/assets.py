"""Locate the pretrained files that ship inside PyPI packages (no download needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from leam.errors import LeamError

DLIB_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}


def face_recognition_models_dir() -> Path:
    """Folder of ``face_recognition_models``' .dat files, found without importing the package.

    Importing it needs ``pkg_resources``, which recent setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise LeamError("package face_recognition_models is not installed (pip install face_recognition_models==0.3.0)")
    return Path(spec.origin).parent / "models"


def dlib_model_path(kind: str) -> Path:
    if kind not in DLIB_FILES:
        raise LeamError(f"unknown dlib model {kind!r}; choose one of: {', '.join(DLIB_FILES)}")
    path = face_recognition_models_dir() / DLIB_FILES[kind]
    if not path.is_file():
        raise LeamError(f"dlib model file missing: {path}")
    return path
