"""The three ways to get the face subset (``data.source``) and the ``faces`` stage's outputs.

* ``sample``: the committed manifest (``data.manifest``), copied from a local mirror (``data.mirror`` or env
  ``LEAM_FACES_MIRROR``) or downloaded from its public URLs; every file's sha256 is verified.
* ``imdb_face``: rows of the official IMDb-Face CSV (``data.imdb_csv``), downloaded and cropped around the
  annotated face box.
* ``folder``: ``<data.folder_root>/<identity>/*.jpg|jpeg|png`` with an optional ``labels.csv``.

All three become ``FaceJob`` lists, run by ``leam.data.fetch``, and end as the same ``index.csv`` /
``discards.csv`` / ``summary.json`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import io
import logging
import os
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from leam.data.fetch import (DOWNLOAD_CACHE, DownloadCache, FaceJob, FetchFailed, FetchSettings, check_readable_dir,
                             download, prune, run_jobs)
from leam.data.manifest import (DISCARD_COLUMNS, GENDERS, INDEX_COLUMNS, image_id_for, read_csv_strict, read_sample_manifest,
                                select_accounted, slugify)
from leam.errors import LeamError, check_choice
from leam.io import param, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

SOURCES = ("sample", "imdb_face", "folder")
MIRROR_ENV = "LEAM_FACES_MIRROR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_TABLE_BYTES = 2 << 30
"""Largest CSV read from a URL (the full IMDb-Face CSV is a few hundred MB)."""
TABLE_DEADLINE_S = 3600.0
"""Wall-clock limit for downloading one such CSV (data.deadline_s is sized for one photo)."""
CROP_VERSION = "crop-v1"
"""Part of every crop's cache key: change it when ``crop_face`` changes, so cached crops are made again."""
DEFAULT_CROP_MARGIN = 0.5
"""IMDb-Face crops keep this fraction of the box's width/height on each side, so that the align stage's
detector sees the whole head and some context (a tight box often loses the chin or forehead)."""


@dataclass
class FacesResult:
    """What a run produced: ``index`` (INDEX_COLUMNS), ``discards`` (DISCARD_COLUMNS), ``summary`` (JSON-able)."""

    index: pd.DataFrame
    discards: pd.DataFrame
    summary: dict
    reused: int = 0
    """Images not fetched again: already in place (resume) or taken from the download cache."""
    downloaded: int = 0
    """Images that came over the network in this run."""
    pruned: int = 0
    """Stale files removed from the images folder."""


# --------------------------------------------------------------------------------------------- helpers

def resolve_mirror(configured: str | None, environ: dict | None = None) -> Path | None:
    """The mirror folder: ``data.mirror`` if set, else ``$LEAM_FACES_MIRROR``, else None (download).

    A configured mirror that is missing or unreadable is a LeamError rather than a silent fallback to
    downloading 65 MB.
    """
    environ = os.environ if environ is None else environ
    chosen = (configured or "").strip() or environ.get(MIRROR_ENV, "").strip()
    if not chosen:
        return None
    what = "face mirror (data.mirror)" if (configured or "").strip() else f"face mirror (${MIRROR_ENV})"
    return check_readable_dir(Path(chosen).expanduser(), what)


def _safe_file_name(name: str) -> str:
    """A file name made of ``A-Z a-z 0-9 . _ -`` (others -> ``_``) with an image suffix (``.jpg`` added if none)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip(".") or "image"
    return name if name.lower().endswith(IMAGE_SUFFIXES) else f"{name}.jpg"


def _read_table(location: str, what: str, settings: FetchSettings) -> pd.DataFrame:
    """A CSV from a path or an http(s)/file URL, all cells as strings; failures are LeamErrors."""
    if urllib.parse.urlparse(location).scheme in ("http", "https", "file"):
        cache = DownloadCache(settings.cache_dir) if settings.cache_dir is not None else None
        raw = cache.get(cache.key(location)) if cache is not None else None
        if raw is None:
            try:
                raw = download(location, settings, max_bytes=MAX_TABLE_BYTES, deadline_s=TABLE_DEADLINE_S)
            except FetchFailed as failed:
                raise LeamError(f"cannot download {what} {location}: {failed}") from None
            if cache is not None:
                cache.put(cache.key(location), raw, url=location)
        return read_csv_strict(io.BytesIO(raw), f"{what} {location}")
    path = Path(location)
    if not path.is_file():
        raise LeamError(f"{what} not found: {path}")
    return read_csv_strict(path, f"{what} {location}")


def _read_labels(location: str | Path | None, settings: FetchSettings) -> dict[str, str]:
    """``identity -> gender`` from a labels CSV (columns ``identity, gender``); genders female/male/unknown.

    An identity listed twice with different genders is a LeamError naming both lines (the same gender twice
    is fine): which one wins would otherwise depend on the row order.
    """
    if not location:
        return {}
    table = _read_table(str(location), "labels CSV", settings)
    table.columns = [c.strip().lower() for c in table.columns]
    if not {"identity", "gender"} <= set(table.columns):
        raise LeamError(f"labels CSV {location} needs columns identity, gender (has {', '.join(table.columns)})")
    genders = table.gender.str.strip().str.lower()
    bad = ~genders.isin(GENDERS)
    if bad.any():
        raise LeamError(f"labels CSV {location}: gender {table.gender[bad].iloc[0]!r} is not one of {', '.join(GENDERS)}")
    labels: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for line, identity, gender in zip(range(2, len(table) + 2), table.identity.str.strip(), genders):
        if identity in labels and labels[identity] != gender:
            raise LeamError(f"labels CSV {location}: identity {identity!r} has gender {labels[identity]!r} on line "
                            f"{line_of[identity]} and {gender!r} on line {line}; keep one row per identity")
        labels.setdefault(identity, gender)
        line_of.setdefault(identity, line)
    return labels


# --------------------------------------------------------------------------------------------- sample

def sample_jobs(manifest: pd.DataFrame, images_dir: Path, mirror: Path | None) -> list[FaceJob]:
    """Manifest rows -> jobs that copy ``<mirror>/<file>`` (or download ``url``) to ``images/<identity>/<name>``."""
    jobs = []
    for row in manifest.itertuples(index=False):
        if mirror is None and not row.url:
            raise LeamError(f"manifest row {row.image_id} has no url and no mirror is set (data.mirror / ${MIRROR_ENV})")
        jobs.append(FaceJob(image_id=row.image_id, identity=row.identity, gender=row.gender, source=row.source or "sample",
                            target=images_dir / row.identity / Path(row.file).name,
                            local=mirror / row.file if mirror is not None else None,
                            url=None if mirror is not None else row.url, sha256=row.sha256))
    return jobs


def _sample(data: dict, seed: int, images_dir: Path, settings: FetchSettings) -> tuple[list[FaceJob], list[dict], int]:
    manifest = read_sample_manifest(data.get("manifest") or "manifests/sample.csv")
    chosen, discards, not_selected = _select(manifest, seed, data)
    mirror = resolve_mirror(data.get("mirror"))
    log.info("sample: %d of %d images, %d identities, from %s", len(chosen), len(manifest),
             chosen.identity.nunique(), mirror if mirror else "their public URLs")
    return sample_jobs(chosen, images_dir, mirror), discards, not_selected


def _select(rows: pd.DataFrame, seed: int, data: dict, path_column: str | None = None
            ) -> tuple[pd.DataFrame, list[dict], int]:
    """The seeded subset of ``rows`` chosen by ``data.max_*`` / ``data.min_images_per_identity``, with the
    ``too_few_images`` discards and the count of rows the caps left out (:func:`select_accounted`)."""
    return select_accounted(rows, seed, int(data.get("max_identities", 0)), int(data.get("max_images_per_identity", 0)),
                            int(data.get("min_images_per_identity", 0)), path_column)


# --------------------------------------------------------------------------------------------- IMDb-Face

def read_imdb_face(table: pd.DataFrame, location: str = "IMDb-Face CSV") -> tuple[pd.DataFrame, list[dict]]:
    """Normalise IMDb-Face rows; returns (rows, discards of rows with unusable annotations).

    Assumed format (the file shared by the dataset authors, fwang91/IMDb-Face): header
    ``name,index,image,rect,height width,url``, where ``index`` is the person's IMDb id (``nm...``), ``image``
    the image's file name, ``rect`` the face box ``"x1 y1 x2 y2"`` (pixels, corners) and ``height width``
    (``"H W"``) the size of the image the box was drawn on, which may differ from the size of the file the
    URL serves today. Separate ``height`` and ``width`` columns are accepted too, and ``image`` is optional
    (the URL's last path segment is used). Output columns: identity (``<name slug>_<index>``, unique even
    for namesakes), image_id, file, url, rect (4 floats), height, width.
    """
    table = table.rename(columns=lambda c: str(c).strip().lower())
    if "height width" in table.columns:
        sizes = table["height width"].str.split(expand=True, n=1).reindex(columns=[0, 1])
        table = table.assign(height=sizes[0], width=sizes[1])
    needed = ("name", "index", "url", "rect", "height", "width")
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise LeamError(f"{location} lacks column(s) {', '.join(missing)}; expected name, index, image, rect, "
                        f"'height width' (or height, width), url")
    if table.empty:
        raise LeamError(f"{location} has no rows")
    rect = table.rect.str.split(expand=True).reindex(columns=range(4)).apply(pd.to_numeric, errors="coerce")
    height = pd.to_numeric(table.height, errors="coerce")
    width = pd.to_numeric(table.width, errors="coerce")
    names = table["name"].str.strip()
    identity = [_imdb_identity(n, i) for n, i in zip(names, table["index"])]
    files = [_safe_file_name(img if img.strip() else urllib.parse.urlparse(url).path)
             for img, url in zip(table.get("image", pd.Series([""] * len(table), dtype=str)), table.url)]
    rows = pd.DataFrame({"identity": identity, "file": files, "url": table.url.str.strip(),
                         "x1": rect[0], "y1": rect[1], "x2": rect[2], "y2": rect[3],
                         "height": height, "width": width})
    rows["image_id"] = [image_id_for(i, f) if i else "" for i, f in zip(rows.identity, rows.file)]
    valid = (rows.identity != "") & rows.url.str.match(r"^(https?|file)://") \
        & rows[["x1", "y1", "x2", "y2", "height", "width"]].notna().all(axis=1) \
        & (rows.x2 > rows.x1) & (rows.y2 > rows.y1) & (rows.height > 0) & (rows.width > 0)
    duplicate = valid & rows.image_id.duplicated()
    discards = [{"image_id": r.image_id or f"row{i + 2}", "path": "", "reason": "bad_annotation"}
                for i, r in zip(np.flatnonzero(~valid), rows[~valid].itertuples())]
    discards += [{"image_id": r.image_id, "path": "", "reason": "duplicate_id"} for r in rows[duplicate].itertuples()]
    return rows[valid & ~duplicate].reset_index(drop=True), discards


def _imdb_identity(name: str, imdb_index: str) -> str:
    """``<name slug>_<IMDb id>`` (namesakes stay apart); "" when either part has no letters or digits."""
    try:
        return f"{slugify(name)}_{slugify(imdb_index)}"
    except LeamError:
        return ""


def crop_face(data: bytes, box: tuple[float, float, float, float], annotated_hw: tuple[float, float],
              margin: float, suffix: str) -> bytes:
    """Crop an encoded image around an annotated face box and re-encode it (same format as ``suffix``).

    ``box`` = (x1, y1, x2, y2) in pixels of an image of size ``annotated_hw`` = (H, W); it is rescaled to the
    decoded image's size, grown by ``margin`` x its width/height on each side and clipped to the image.
    Raises FetchFailed ``unreadable`` (not an image) or ``bad_rect`` (box outside the image).
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FetchFailed("unreadable", "not a decodable image")
    h, w = image.shape[:2]
    sx, sy = w / annotated_hw[1], h / annotated_hw[0]
    x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(int(np.floor(x1 - mx)), 0), max(int(np.floor(y1 - my)), 0)
    right, bottom = min(int(np.ceil(x2 + mx)), w), min(int(np.ceil(y2 + my)), h)
    if right - left < 2 or bottom - top < 2:
        raise FetchFailed("bad_rect", f"box {box} of a {annotated_hw} image is outside the {h}x{w} download")
    ok, encoded = cv2.imencode(".png" if suffix.lower() == ".png" else ".jpg", image[top:bottom, left:right],
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise FetchFailed("unreadable", "cannot re-encode the crop")
    return encoded.tobytes()


def _crop_for(row, margin: float) -> tuple[Callable[[bytes], bytes], str]:
    """The crop of one IMDb-Face row and its cache key (everything the crop depends on besides the photo)."""
    box, hw, suffix = (row.x1, row.y1, row.x2, row.y2), (row.height, row.width), Path(row.file).suffix
    key = f"{CROP_VERSION} box={','.join(map(repr, map(float, box)))} hw={float(hw[0])!r},{float(hw[1])!r} " \
          f"margin={float(margin)!r} format={suffix.lower()}"
    return (lambda data: crop_face(data, box, hw, margin, suffix)), key


def _imdb_face(data: dict, seed: int, images_dir: Path, settings: FetchSettings
               ) -> tuple[list[FaceJob], list[dict], int]:
    location = str(data.get("imdb_csv") or "").strip()
    if not location:
        raise LeamError("data.imdb_csv is empty: set it to the path or URL of IMDb-Face.csv")
    rows, discards = read_imdb_face(_read_table(location, "IMDb-Face CSV", settings), location)
    margin = float(data.get("crop_margin", DEFAULT_CROP_MARGIN))
    if margin < 0:
        raise LeamError(f"data.crop_margin={margin!r} must be >= 0 (fraction of the face box added on each side)")
    chosen, too_few, not_selected = _select(rows, seed, data)
    discards += too_few
    if data.get("max_identities", 0) == 0 and chosen.identity.nunique() > 1000:
        log.warning("imdb_face: no data.max_identities cap: downloading %d images of %d identities",
                    len(chosen), chosen.identity.nunique())
    labels = _read_labels(data.get("labels_csv"), settings)
    log.info("imdb_face: %d images of %d identities (of %d usable rows; %d unusable)", len(chosen),
             chosen.identity.nunique(), len(rows), len(discards))
    jobs = [FaceJob(image_id=r.image_id, identity=r.identity, gender=labels.get(r.identity, "unknown"),
                    source="imdb_face", target=images_dir / r.identity / r.file, url=r.url,
                    postprocess=crop, postprocess_key=crop_key)
            for r in chosen.itertuples(index=False) for crop, crop_key in [_crop_for(r, margin)]]
    return jobs, discards, not_selected


# --------------------------------------------------------------------------------------------- folder

FOLDER_LABELS = "labels.csv"
"""Optional ``identity,gender`` table at the top of a folder source."""


def folder_root(data: dict) -> Path:
    """The folder source's root (``data.folder_root``), checked to be a readable folder."""
    root = str(data.get("folder_root") or "").strip()
    if not root:
        raise LeamError("data.folder_root is empty: set it to a folder holding <identity>/*.jpg|jpeg|png")
    return check_readable_dir(Path(root).expanduser(), "data.folder_root")


def scan_folder(root: Path) -> tuple[list[dict], list[dict]]:
    """Every entry of a folder source ``<root>/<identity>/<photo>``: ``(records, discards)``.

    ``records``: one dict per photo (identity slug, ``folder`` name, safe file ``name``, ``local`` path,
    image_id). ``discards`` (DISCARD_COLUMNS, ``path`` = the entry) name everything else found, so that nothing
    under the root disappears unnoticed: ``unreadable_folder`` (an identity folder that cannot be listed:
    one row, image_id ``<identity>/*``), ``unsupported_type`` (a file that is not .jpg/.jpeg/.png),
    ``nested_folder`` (a folder inside an identity folder), ``no_identity_folder`` (a file directly under the
    root other than labels.csv; image_id ``""``), ``duplicate_id`` (a second photo with the same
    ``<identity>/<stem>``, e.g. ``a.jpg`` and ``a.png``). Hidden entries (names starting with ``.``) are not
    inputs. Two folders that become the same identity slug are a LeamError.
    """
    records: list[dict] = []
    discards: list[dict] = []
    seen: dict[str, str] = {}
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            if entry.name != FOLDER_LABELS:
                discards.append({"image_id": "", "path": str(entry), "reason": "no_identity_folder"})
            continue
        identity = slugify(entry.name)
        if identity in seen:
            raise LeamError(f"folders {seen[identity]!r} and {entry.name!r} both become identity {identity!r}")
        seen[identity] = entry.name
        try:
            files = sorted(f for f in entry.iterdir() if not f.name.startswith("."))
        except OSError:
            discards.append({"image_id": f"{identity}/*", "path": str(entry), "reason": "unreadable_folder"})
            continue
        taken: set[str] = set()
        for file in files:
            name = _safe_file_name(file.name)
            image_id = image_id_for(identity, name)
            if file.is_dir():
                discards.append({"image_id": f"{identity}/{file.name}/*", "path": str(file), "reason": "nested_folder"})
            elif file.suffix.lower() not in IMAGE_SUFFIXES:
                discards.append({"image_id": f"{identity}/{file.name}", "path": str(file), "reason": "unsupported_type"})
            elif image_id in taken:
                discards.append({"image_id": image_id, "path": str(file), "reason": "duplicate_id"})
            else:
                taken.add(image_id)
                records.append({"identity": identity, "folder": entry.name, "file": name, "local": file,
                                "image_id": image_id})
    return records, discards


def _folder(data: dict, seed: int, images_dir: Path, settings: FetchSettings) -> tuple[list[FaceJob], list[dict], int]:
    root_path = folder_root(data)
    labels_file = root_path / FOLDER_LABELS
    labels = _read_labels(labels_file if labels_file.is_file() else None, settings)
    records, discards = scan_folder(root_path)
    if not records:
        raise LeamError(f"no images found under {root_path}/<identity>/ (.jpg, .jpeg, .png)")
    rows = pd.DataFrame(records)
    rows["gender"] = [labels.get(folder, labels.get(identity, "unknown"))
                      for folder, identity in zip(rows.folder, rows.identity)]
    chosen, too_few, not_selected = _select(rows, seed, data, path_column="local")
    discards += too_few
    log.info("folder: %d images of %d identities from %s", len(chosen), chosen.identity.nunique(), root_path)
    jobs = [FaceJob(image_id=r.image_id, identity=r.identity, gender=r.gender, source="folder",
                    target=images_dir / r.identity / r.file, local=Path(r.local))
            for r in chosen.itertuples(index=False)]
    return jobs, discards, not_selected


# --------------------------------------------------------------------------------------------- driver

_BUILDERS = {"sample": _sample, "imdb_face": _imdb_face, "folder": _folder}


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators), absolute when it lies outside ``root``."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def collect_faces(params: dict, out_dir: str | os.PathLike = "data/faces", root: str | os.PathLike = ".",
                  progress: bool = True, backoff_s: float = 1.0,
                  cache_dir: str | os.PathLike | None = None) -> FacesResult:
    """Get the face subset chosen by ``params['data']`` into ``<out_dir>/images``; nothing else is written.

    ``root``: folder that index paths are relative to (the repository root). Returns the index (sorted by
    identity then file name), the discards and the summary; ``write_outputs`` writes them. ``cache_dir``:
    the download cache (default ``<root>/.cache/downloads``), outside ``out_dir`` because ``dvc repro``
    deletes the stage's outputs before it runs.
    """
    data = param(params, "data")
    if not isinstance(data, dict):
        raise LeamError("params.yaml: data must be a mapping of the faces stage's parameters")
    source = data.get("source", "sample")
    check_choice("data.source", source, SOURCES)
    seed = param(params, "seed", 0)
    out_dir, root = Path(out_dir), Path(root)
    settings = FetchSettings(workers=data.get("download_workers", 8), retries=data.get("retries", 4),
                             timeout_s=data.get("timeout_s", 30), deadline_s=data.get("deadline_s", 120),
                             backoff_s=backoff_s, progress=progress,
                             cache_dir=Path(cache_dir) if cache_dir is not None else root / DOWNLOAD_CACHE)
    images_dir = out_dir / "images"
    jobs, discards, not_selected = _BUILDERS[source](data, int(seed), images_dir, settings)
    outcomes = run_jobs(jobs, settings, description=f"faces ({source})")
    kept = [o for o in outcomes if o.reason is None]
    discards += [{"image_id": o.job.image_id, "path": _relative(o.job.target, root), "reason": o.reason}
                 for o in outcomes if o.reason is not None]
    pruned = prune(images_dir, {o.job.target for o in kept})
    index = pd.DataFrame([{"image_id": o.job.image_id, "identity": o.job.identity, "gender": o.job.gender,
                           "path": _relative(o.job.target, root), "sha256": o.sha256, "source": o.job.source,
                           "_name": o.job.target.name} for o in kept],
                         columns=[*INDEX_COLUMNS, "_name"])
    index = index.sort_values(["identity", "_name"], kind="stable").drop(columns="_name").reset_index(drop=True)
    discard_frame = pd.DataFrame(discards, columns=list(DISCARD_COLUMNS))
    return FacesResult(index=index, discards=discard_frame,
                       summary=summarise(source, index, discard_frame, not_selected),
                       reused=sum(o.reused for o in kept), downloaded=sum(o.origin == "download" for o in kept),
                       pruned=pruned)


def summarise(source: str, index: pd.DataFrame, discards: pd.DataFrame, not_selected: int = 0) -> dict:
    """Small JSON for metrics/data.json: counts of kept images, identities, genders and discards by reason.

    ``inputs`` = every row or file the source offered = ``images`` (kept) + ``discarded`` + ``not_selected``
    (left out by the data.max_* caps: counted, not listed in discards.csv).
    """
    genders = Counter(index.gender)
    return {
        "source": source,
        "inputs": int(len(index) + len(discards) + not_selected),
        "not_selected": int(not_selected),
        "images": int(len(index)),
        "identities": int(index.identity.nunique()),
        "images_by_gender": {g: int(genders.get(g, 0)) for g in GENDERS},
        "discarded": int(len(discards)),
        "discarded_by_reason": {k: int(v) for k, v in sorted(Counter(discards.reason).items())},
    }


def write_outputs(result: FacesResult, out_dir: str | os.PathLike = "data/faces") -> None:
    """Write ``index.csv``, ``discards.csv`` and ``summary.json`` into ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    write_csv_atomic(out_dir / "index.csv", result.index)
    write_csv_atomic(out_dir / "discards.csv", result.discards)
    write_json_atomic(out_dir / "summary.json", result.summary)
