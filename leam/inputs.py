"""Fingerprints of the input files that params name, for DVC: what each stage reads outside the pipeline.

DVC can only depend on a path written in dvc.yaml. The face source's input is a param that depends on
``data.source`` (``data.manifest``, ``data.folder_root`` or ``data.imdb_csv`` + ``data.labels_csv``), may be
``""`` (an empty dependency path makes DVC 3 fail with "unexpected error"; a missing one fails the run) or a
URL; the same holds for ``leam.pairs_file`` and ``parsing.farl_model_path``. So the ``inputs`` stage, which
runs on every ``dvc repro``, writes one small JSON per consuming stage with the sha256 of every local file
it will read, and that stage depends on its JSON: it reruns exactly when one of its files changes.

Files whose content a param already pins (``model_zoo.<name>.sha256``, ``parsing.farl_sha256`` of a URL)
or that are checked against hashes in the code (the TF.js models) need no fingerprint.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from leam.data.sources import FOLDER_LABELS, SOURCES, folder_root, scan_folder
from leam.errors import check_choice
from leam.io import sha256_file

__all__ = ["location_fingerprint", "source_fingerprint", "stage_inputs"]


def _sha256_or_none(path: Path) -> str | None:
    """sha256 of a readable file; None when it is missing or cannot be read (the reading stage says why)."""
    try:
        return sha256_file(path) if path.is_file() else None
    except OSError:
        return None


def location_fingerprint(role: str, location: Any) -> list[dict]:
    """``[]`` for ``""``; ``[{role, url}]`` for a URL (not fetched); else ``[{role, path, sha256}]``
    (sha256 ``None`` for a missing file)."""
    location = str(location or "").strip()
    if not location:
        return []
    if urllib.parse.urlparse(location).scheme in ("http", "https", "file"):
        return [{"role": role, "url": location}]
    return [{"role": role, "path": location, "sha256": _sha256_or_none(Path(location).expanduser())}]


def source_fingerprint(data: dict) -> dict:
    """What the faces stage reads for ``data.source`` (``data`` = the params group as a mapping).

    ``sample``: the manifest; ``imdb_face``: the IMDb-Face CSV and the labels CSV; ``folder``: one input
    ``folder_root`` with ``photos`` (``<identity folder>/<file>`` -> sha256), ``labels_csv`` (sha256 or None)
    and ``other`` (``[path, reason]`` of every entry :func:`leam.data.sources.scan_folder` does not take).
    """
    source = data.get("source", "sample")
    check_choice("data.source", source, SOURCES)
    inputs: list[dict] = []
    if source == "sample":
        inputs += location_fingerprint("manifest", data.get("manifest") or "manifests/sample.csv")
    elif source == "imdb_face":
        inputs += location_fingerprint("imdb_csv", data.get("imdb_csv"))
        inputs += location_fingerprint("labels_csv", data.get("labels_csv"))
    else:
        root = folder_root(data)
        records, discards = scan_folder(root)
        inputs.append({
            "role": "folder_root", "path": str(data.get("folder_root")).strip(),
            "labels_csv": _sha256_or_none(root / FOLDER_LABELS),
            "photos": {Path(r["local"]).relative_to(root).as_posix(): _sha256_or_none(Path(r["local"]))
                       for r in records},
            "other": [[Path(d["path"]).relative_to(root).as_posix(), d["reason"]] for d in discards],
        })
    return {"source": source, "inputs": inputs}


def stage_inputs(config) -> dict[str, dict]:
    """``{stage: fingerprint}`` for the stages that read files named by params (``config``: the validated
    :class:`leam.config.Config`): ``faces``, ``leam`` (the pairs file when ``leam.reference`` is ``pairs``)
    and ``parse`` (the FaRL model file when ``parsing.backend`` is ``farl``)."""
    return {
        "faces": source_fingerprint(config.data.model_dump()),
        "leam": {"inputs": location_fingerprint("pairs_file", config.leam.pairs_file)
                 if config.leam.reference == "pairs" else []},
        "parse": {"inputs": location_fingerprint("farl_model_path", config.parsing.farl_model_path)
                  if config.parsing.backend == "farl" else []},
    }
