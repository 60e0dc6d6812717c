"""Model weights on disk, checked by one rule for every family: no file is loaded before its sha256 matches.

Where the expected hash comes from differs by family, the check does not:

- dlib's converted network: ``data/models/weights.json`` (``WEIGHTS_INDEX``, written by the weights stage)
  records ``file`` and ``sha256`` per model (:func:`verified_weights_path`);
- the TF.js human-models: the sha256 of each ``.json`` / ``.bin`` pinned in
  ``leam.models.human_models.FILE_SHA256``;
- user IResNet checkpoints: the ``sha256`` of their ``model_zoo`` entry.

A mismatch is a one-line :class:`leam.errors.ChecksumError` naming the file, the hash found and the one
expected, so a truncated download or a hand-edited file never turns into a traceback deep in torch.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from leam.errors import ChecksumError, LeamError
from leam.io import download_to, sha256_file

__all__ = ["WEIGHTS_INDEX", "local_file", "verify_sha256", "verified_weights_path"]

WEIGHTS_INDEX = "weights.json"
"""Index of converted/fetched weights under the weights folder: ``{model: {file, sha256, ...}}``."""


def verify_sha256(path: str | os.PathLike, expected: str, *, expected_by: str = "expected", hint: str = "") -> Path:
    """``path`` once its sha256 equals ``expected`` (hex, any case); else a one-line ChecksumError.

    ``expected_by`` names where the pinned hash comes from (``weights.json expects``); ``hint`` says how to
    get a good copy back. A missing file is a LeamError.
    """
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"weights file not found: {path}{f' ({hint})' if hint else ''}")
    actual = sha256_file(path)
    if actual.lower() != str(expected).strip().lower():
        raise ChecksumError(f"checksum mismatch for {path}: sha256 {actual[:12]}..., {expected_by} "
                            f"{str(expected)[:12]}...{f' ({hint})' if hint else ''}")
    return path


def verified_weights_path(weights_dir: str | os.PathLike, name: str) -> Path:
    """Path of ``name``'s weights after checking the sha256 recorded in ``weights.json``."""
    weights_dir = Path(weights_dir)
    index_path = weights_dir / WEIGHTS_INDEX
    if not index_path.is_file():
        raise LeamError(f"{index_path} not found: run `python -m stages.weights` (or `dvc repro weights`)")
    try:
        entry = json.loads(index_path.read_text(encoding="utf-8"))[name]
        path, expected = weights_dir / entry["file"], entry["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LeamError(f"{index_path} has no valid entry for {name!r} ({type(exc).__name__}: {exc}); "
                        f"rerun `python -m stages.weights`") from None
    if not path.is_file():
        raise LeamError(f"weights file for {name!r} not found: {path} (run `python -m stages.weights`)")
    return verify_sha256(path, expected, expected_by="weights.json expects", hint="rerun `python -m stages.weights`")


def local_file(path_or_url: str, cached: Path, what: str, key: str) -> Path:
    """A user's file on disk: ``path_or_url`` itself when it is a path, else an http(s)/file URL downloaded
    once to ``cached``. ``what`` names it in messages ("checkpoint for model 'x'"), ``key`` is its param."""
    if urllib.parse.urlparse(path_or_url).scheme not in ("http", "https", "file"):
        path = Path(os.path.expanduser(path_or_url))
        if not path.is_file():
            raise LeamError(f"{what} not found: {path} ({key})")
        return path
    if not cached.is_file():
        download_to(path_or_url, cached, what)
    return cached
