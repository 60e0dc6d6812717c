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
from typing import Any, Iterable, Iterator

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


def write_csv_parts_atomic(target: str | os.PathLike, frames: Iterable[pd.DataFrame]) -> int:
    """One CSV of ``frames`` in turn (the same columns each; the header once), written as they come so only
    one is in memory at a time; atomic like :func:`write_csv_atomic`, nothing if any frame fails. Returns the rows."""
    rows, columns = 0, None
    with atomic_path(target) as tmp, open(tmp, "w", newline="", buffering=1 << 20) as handle:
        for frame in frames:
            if columns is not None and list(frame.columns) != columns:
                raise LeamError(f"{target}: a part has columns {list(frame.columns)}, the first had {columns}")
            frame.to_csv(handle, index=False, header=columns is None)
            columns, rows = list(frame.columns), rows + len(frame)
    return rows


def write_png_atomic(target: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (H, W, 3) as PNG atomically; an image OpenCV cannot encode is one LeamError."""
    import cv2

    ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise LeamError(f"cannot encode {target} as PNG (image {getattr(rgb, 'shape', '?')})")
    write_bytes_atomic(target, png.tobytes())
    return Path(target)


def example_name(image_id: str) -> str:
    """File name of an example image: the image id with ``/`` as ``__``, plus ``.png``."""
    return f"{str(image_id).replace('/', '__')}.png"


def save_npy_atomic(target: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


# ------------------------------------------------------------------ checked readers of stage outputs
# A truncated .npy, an empty or header-only CSV, broken JSON or a missing column is one LeamError line that
# names the file and says how to get a good copy back, never a traceback from numpy, pandas or json.

def _restore_hint(stage: str | None) -> str:
    return f"restore it with `dvc checkout` or rebuild it with `dvc repro{f' {stage}' if stage else ''}`"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def bad_file(path: str | os.PathLike, problem: str, stage: str | None = None, hint: str | None = None) -> LeamError:
    """The one-line error for an unusable input file: ``<path> <problem>; <hint>``.

    ``hint`` defaults to restoring the file (``dvc checkout``) or rebuilding it (``dvc repro [stage]``); pass
    one for files the user provides."""
    return LeamError(f"{path} {problem}; {hint or _restore_hint(stage)}")


def load_npy(path: str | os.PathLike, *, mmap_mode: str | None = None, stage: str | None = None,
             hint: str | None = None) -> np.ndarray:
    """``np.load`` of a stage output (no pickles); a missing, empty, truncated or non-.npy file is a LeamError."""
    path = Path(path)
    if not path.is_file():
        raise bad_file(path, "is missing", stage, hint)
    if path.stat().st_size == 0:
        raise bad_file(path, "is empty (0 bytes)", stage, hint)
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK\x03\x04"):  # numpy would call anything else a pickle
        raise bad_file(path, f"is not a .npy file (starts with {magic!r}, not the .npy magic bytes)", stage, hint)
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # bad magic or header, data shorter than the header says
        raise bad_file(path, f"is truncated or not a .npy array ({_first_line(exc)})", stage, hint) from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        array.close()
        raise bad_file(path, "is not a .npy array", stage, hint)
    return array


def read_csv_checked(path: str | os.PathLike, required_columns=(), *, allow_empty: bool = False,
                     stage: str | None = None, hint: str | None = None, **read_csv_kwargs) -> pd.DataFrame:
    """``pd.read_csv`` of a stage output, checked: the file parses, has ``required_columns`` and, unless
    ``allow_empty`` (e.g. a discards table), at least one row. Failures are one-line LeamErrors."""
    path = Path(path)
    if not path.is_file():
        raise bad_file(path, "is missing", stage, hint)
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except pd.errors.EmptyDataError:
        raise bad_file(path, "is empty (no header line)", stage, hint) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise bad_file(path, f"cannot be read as CSV ({_first_line(exc)})", stage, hint) from None
    missing = [str(column) for column in required_columns if column not in frame.columns]
    if missing:
        raise bad_file(path, f"lacks column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})",
                       stage, hint)
    if frame.empty and not allow_empty:
        raise bad_file(path, "has a header but no rows", stage, hint)
    return frame


def read_json_checked(path: str | os.PathLike, required_keys=(), *, stage: str | None = None,
                      hint: str | None = None) -> Any:
    """``json.loads`` of a stage output; with ``required_keys`` it must be an object holding them.
    A missing, empty or invalid file and a missing key are one-line LeamErrors."""
    path = Path(path)
    if not path.is_file():
        raise bad_file(path, "is missing", stage, hint)
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise bad_file(path, "is empty", stage, hint)
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_file(path, f"is not valid JSON ({_first_line(exc)})", stage, hint) from None
    except OSError as exc:
        raise bad_file(path, f"cannot be read ({exc.strerror or exc})", stage, hint) from None
    if required_keys:
        if not isinstance(document, dict):
            raise bad_file(path, f"must hold a JSON object, not {type(document).__name__}", stage, hint)
        missing = [str(key) for key in required_keys if key not in document]
        if missing:
            raise bad_file(path, f"lacks key(s) {', '.join(missing)}", stage, hint)
    return document


def read_aligned(folder: str | os.PathLike, frame_size: int | None = None, columns=()
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The align stage's outputs (docs/ARCHITECTURE.md), checked against each other.

    Returns the index, frames (N, S, S, 3) uint8 memory-mapped, and landmarks (N, 68, 2) in frame pixels.
    ``frame_size`` additionally requires S to match ``align.frame_size``; ``columns`` names further index
    columns a stage needs (a ``row`` column must index the arrays).
    """
    folder = Path(folder)
    paths = {name: folder / name for name in ("index.csv", "frames.npy", "landmarks.npy")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise LeamError(f"missing aligned data: {', '.join(missing)} (run `dvc repro align`)")
    index = read_csv_checked(paths["index.csv"], ("image_id", "identity", *columns), stage="align",
                             dtype={"image_id": str, "identity": str})
    frames = load_npy(paths["frames.npy"], mmap_mode="r", stage="align")
    landmarks = load_npy(paths["landmarks.npy"], stage="align")
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
    if "row" in index.columns and len(index) and (index["row"].min() < 0 or index["row"].max() >= len(frames)):
        raise LeamError(f"{paths['index.csv']} has rows outside 0..{len(frames) - 1}")
    return index, frames, landmarks


FLOAT16_TINY = float(np.finfo(np.float16).tiny)
"""6.1e-05: stored map values below this are subnormal float16 (fewer significant bits)."""


def write_leam_outputs(folder: str | os.PathLike, maps: np.ndarray, record: dict, meta: pd.DataFrame,
                       discards: pd.DataFrame) -> int:
    """Write one model's leam-stage outputs, the files :func:`read_leam_outputs` reads; returns the number of
    layer maps whose peak is faint in float16 (below ``FLOAT16_TINY`` of their layer's peak).

    maps: (N, L+1, G, G) float32, the last map the overall one. Raw magnitudes differ by orders of magnitude
    between models (mobilefacenet peaks near 1e-6, below float16's normal range), so each layer is stored
    divided by one constant, its peak over all images: raw = stored * scale[layer] (``scale`` in
    layers.json). Every consumer (top-t ranks, shares, normalised distributions, CVs) is invariant to a
    per-layer constant, and float16 keeps ~3 significant digits relative to the peak.
    """
    folder = Path(folder)
    peaks = maps.max(axis=(0, 2, 3)).astype(np.float64)
    scale = np.where(peaks > 0, peaks, 1.0)
    stored = (maps / scale[None, :, None, None].astype(np.float32)).astype(np.float16)
    layer_peaks = stored[:, :-1].max(axis=(-2, -1))
    faint = int(((layer_peaks > 0) & (layer_peaks < FLOAT16_TINY)).sum())
    save_npy_atomic(folder / "maps.npy", stored)
    write_json_atomic(folder / "layers.json", {**record, "scale": [float(v) for v in scale],
                                               "scale_note": "raw map = stored value * scale[layer]"})
    write_csv_atomic(folder / "meta.csv", meta)
    write_csv_atomic(folder / "discards.csv", discards)
    return faint


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
    stage = f"leam@{model}"
    maps = load_npy(paths[0], mmap_mode="r", stage=stage)
    layers = read_json_checked(paths[1], ("layers",), stage=stage)
    names = layers["layers"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise bad_file(paths[1], f"key 'layers' must be a list of layer names, got {names!r:.80}", stage)
    meta = read_csv_checked(paths[2], ("row", "image_id", "identity", "gender"), stage=stage)
    if maps.ndim != 4 or maps.shape[0] != len(meta) or maps.shape[1] != len(names) or maps.shape[2] != maps.shape[3]:
        raise LeamError(f"{paths[0]} has shape {maps.shape}, expected ({len(meta)}, {len(names)}, G, G) "
                        f"from meta.csv and layers.json; rerun `dvc repro leam@{model}`")
    meta = meta.sort_values("row").reset_index(drop=True)
    if not np.array_equal(meta["row"].to_numpy(), np.arange(len(meta))):
        raise LeamError(f"{paths[2]}: column 'row' must number the maps 0..{len(meta) - 1}")
    meta["gender"] = meta["gender"].fillna("unknown").astype(str)
    return maps, layers, meta


def read_parsing(parsing_dir: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """The parse stage's outputs: labels (N, S, S) uint8 memory-mapped, index.csv and classes.json, checked."""
    folder = Path(parsing_dir)
    paths = [folder / name for name in ("labels.npy", "index.csv", "classes.json")]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise LeamError(f"missing parser output(s): {', '.join(missing)} (run `dvc repro parse`)")
    labels = load_npy(paths[0], mmap_mode="r", stage="parse")
    index = read_csv_checked(paths[1], ("image_id", "row", "parsed"), stage="parse")
    if labels.ndim != 3 or labels.shape[0] != len(index):
        raise LeamError(f"{paths[0]} has shape {labels.shape} but {paths[1]} lists {len(index)} images")
    return labels, index, read_json_checked(paths[2], ("backend", "available"), stage="parse")


def read_parsing_reference(parsing_dir: str | os.PathLike, index: pd.DataFrame,
                           classes: dict) -> tuple[str, np.ndarray, np.ndarray, list[str]] | None:
    """The reference parser's outputs the parse stage wrote beside its labels (``classes.json``'s
    ``reference``: mesh runs the landmark parser), or None when it ran none: ``(backend, labels (N, S, S) uint8
    memory-mapped, parsed (N,) bool from index.csv's reference_parsed, the classes it produces)``."""
    entry = classes.get("reference")
    if not entry:
        return None
    path = Path(parsing_dir) / entry["labels"]
    if not path.is_file() or "reference_parsed" not in index:
        raise LeamError(f"{Path(parsing_dir) / 'classes.json'} names a reference parser but {path} or index.csv's "
                        f"reference_parsed column is missing (run `dvc repro parse`)")
    labels = load_npy(path, mmap_mode="r", stage="parse")
    if labels.ndim != 3 or labels.shape[0] != len(index):
        raise LeamError(f"{path} has shape {labels.shape} but index.csv lists {len(index)} images")
    return str(entry["backend"]), labels, index["reference_parsed"].astype(bool).to_numpy(), list(entry["available"])


def aligned_rows(index: pd.DataFrame, image_ids, index_path: Path) -> np.ndarray:
    """Array rows (``row`` column, else position) of ``image_ids`` in an aligned index (read from
    ``index_path``, named in the error), in that order; an unknown id is one LeamError."""
    row_of = dict(zip(index["image_id"], index["row"] if "row" in index else range(len(index))))
    unknown = [i for i in image_ids if i not in row_of]
    if unknown:
        raise LeamError(f"{len(unknown)} map image(s) missing from {index_path}, e.g. {unknown[0]!r}")
    return np.array([row_of[i] for i in image_ids], dtype=np.int64)


def read_face_labels(parsing_dir: str | os.PathLike, aligned_dir: str | os.PathLike, image_ids,
                     hint: str = "run the parse and align stages, or choose face_region=landmarks") -> np.ndarray:
    """Parser labels (N, S, S) uint8 of ``image_ids``, in that order, in the analysis frame.

    Rows are found through the aligned index (``data/aligned/index.csv``: ``image_id`` -> ``row`` of
    ``data/parsing/labels.npy``), so maps of any subset of images (a model's ``meta.csv``) get their labels.
    ``hint`` ends the error when a file is missing.
    """
    labels_path, index_path = Path(parsing_dir) / "labels.npy", Path(aligned_dir) / "index.csv"
    for path in (labels_path, index_path):
        if not path.is_file():
            raise LeamError(f"face region needs {path} ({hint})")
    labels = load_npy(labels_path, mmap_mode="r", stage="parse")
    index = read_csv_checked(index_path, ("image_id",), stage="align")
    if labels.shape[0] != len(index):
        raise LeamError(f"{labels_path} has {labels.shape[0]} rows but {index_path} lists {len(index)} images")
    return np.asarray(labels[aligned_rows(index, image_ids, index_path)])


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (undefined statistics) by None so metrics files stay strict JSON for DVC.

    Also turns numpy scalars into Python ones; dicts, lists and tuples are converted recursively.
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


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
