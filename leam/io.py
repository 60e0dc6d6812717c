"""Atomic file output, hashing and parameter loading shared by every stage.

Every output is written to a temporary file beside its target and moved into place with
``os.replace``, so an interrupted stage never leaves a half-written file that DVC would cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from leam.errors import LeamError

PARAMS_FILE = Path("params.yaml")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success move it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give outputs the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv_atomic(target: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def save_npy_atomic(target: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def read_aligned(folder: str | os.PathLike, frame_size: int | None = None
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The align stage's outputs (docs/ARCHITECTURE.md), checked against each other.

    Returns the index, frames (N, S, S, 3) uint8 memory-mapped, and landmarks (N, 68, 2) in frame pixels.
    ``frame_size`` additionally requires S to match ``align.frame_size``.
    """
    folder = Path(folder)
    paths = {name: folder / name for name in ("index.csv", "frames.npy", "landmarks.npy")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise LeamError(f"missing aligned data: {', '.join(missing)} (run `dvc repro align`)")
    index = pd.read_csv(paths["index.csv"], dtype={"image_id": str, "identity": str})
    frames = np.load(paths["frames.npy"], mmap_mode="r")
    landmarks = np.load(paths["landmarks.npy"])
    if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise LeamError(f"{paths['frames.npy']} must be uint8 (N, S, S, 3), got {frames.dtype} {frames.shape}")
    if frame_size is not None and frames.shape[1] != frame_size:
        raise LeamError(f"{paths['frames.npy']} is {frames.dtype} {frames.shape}, expected uint8 (N, {frame_size}, "
                        f"{frame_size}, 3) for align.frame_size={frame_size}")
    if landmarks.shape != (frames.shape[0], 68, 2):
        raise LeamError(f"{paths['landmarks.npy']} must be ({frames.shape[0]}, 68, 2), got {landmarks.shape}")
    if len(index) != len(frames):
        raise LeamError(f"aligned data disagree: {len(frames)} frames, {len(landmarks)} landmarks, "
                        f"{len(index)} index rows")
    return index, frames, landmarks


def read_leam_outputs(leam_dir: str | os.PathLike, model: str) -> tuple[np.ndarray, dict, pd.DataFrame]:
    """One model's leam-stage outputs (docs/ARCHITECTURE.md), checked against each other.

    Returns memory-mapped maps (N, L+1, G, G), the parsed layers.json, and meta.csv sorted by ``row``
    (which must number the maps 0..N-1), with missing genders as ``unknown``.
    """
    folder = Path(leam_dir) / model
    paths = [folder / name for name in ("maps.npy", "layers.json", "meta.csv")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LeamError(f"missing LEAM output(s) for model {model!r}: {', '.join(missing)} "
                        f"(run `dvc repro leam@{model}`)")
    maps = np.load(paths[0], mmap_mode="r")
    layers = json.loads(paths[1].read_text(encoding="utf-8"))
    meta = pd.read_csv(paths[2])
    names = layers.get("layers", [])
    if maps.ndim != 4 or maps.shape[0] != len(meta) or maps.shape[1] != len(names) or maps.shape[2] != maps.shape[3]:
        raise LeamError(f"{paths[0]} has shape {maps.shape}, expected ({len(meta)}, {len(names)}, G, G) "
                        f"from meta.csv and layers.json; rerun `dvc repro leam@{model}`")
    needed = {"row", "image_id", "identity", "gender"} - set(meta.columns)
    if needed:
        raise LeamError(f"{paths[2]} lacks columns: {', '.join(sorted(needed))}")
    meta = meta.sort_values("row").reset_index(drop=True)
    if not np.array_equal(meta["row"].to_numpy(), np.arange(len(meta))):
        raise LeamError(f"{paths[2]}: column 'row' must number the maps 0..{len(meta) - 1}")
    meta["gender"] = meta["gender"].fillna("unknown").astype(str)
    return maps, layers, meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def download_to(url: str, target: str | os.PathLike, what: str, timeout_s: float = 60.0) -> Path:
    """Stream ``url`` into ``target`` atomically; a network failure is a one-line LeamError naming ``what``."""
    import urllib.request

    target = Path(target)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
    except OSError as exc:
        raise LeamError(f"cannot download {what} from {url}: {exc}") from None
    return target


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Read ``params.yaml``; a missing or malformed file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise LeamError(f"params file not found: {path} (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LeamError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise LeamError(f"{path} must hold a mapping of parameter groups")
    return params


def param(params: dict, dotted: str, default: Any = ...) -> Any:
    """Look up a dotted key such as ``leam.batch_size``; a missing key without default is an error."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise LeamError(f"missing parameter {dotted!r} in params.yaml")
            return default
        node = node[part]
    return node
