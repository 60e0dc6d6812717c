"""The committed face manifest (``manifests/sample.csv``) and the seeded subset that a run uses.

A manifest row says which photo belongs to whom and how to get it byte for byte: a relative ``file``
(the path inside a local mirror, ``images/<identity>/<name>``), a public ``url`` and the file's ``sha256``.
The other sources (``imdb_face``, ``folder``) produce the same kind of rows, so capping, naming and the
output index are shared here.
"""

from __future__ import annotations

import os
import re
import warnings
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np
import pandas as pd

from leam.errors import LeamError

GENDERS = ("female", "male", "unknown")

SAMPLE_COLUMNS = ("identity", "gender", "file", "source", "url", "sha256",
                  "source_repo", "source_commit", "source_path", "licence")
"""Columns of ``manifests/sample.csv``, in order."""

INDEX_COLUMNS = ("image_id", "identity", "gender", "path", "sha256", "source")
"""Columns of ``data/faces/index.csv`` (docs/ARCHITECTURE.md)."""

DISCARD_COLUMNS = ("image_id", "path", "reason")
"""Columns of ``data/faces/discards.csv``."""

TOO_FEW_IMAGES = "too_few_images"
"""Discard reason of every image of an identity with fewer than ``data.min_images_per_identity`` images."""

# Repository -> (source tag, licence note). The facts come from the "Sources" table of the mirror's
# README; manifests/SOURCES.md explains them. The licences cover the repositories' code, not the photos.
SAMPLE_SOURCES: dict[str, tuple[str, str]] = {
    "davisking/dlib": ("dlib", "BSL-1.0; examples/ dedicated to the public domain (Boost fallback)"),
    "serengil/deepface": ("deepface", "MIT"),
    "ageitgey/face_recognition": ("face_recognition", "MIT"),
    "jasmcaus/opencv-course": ("opencv_course", "MIT"),
    "codebasics/py": ("codebasics", "none found"),
    "thainh11/ASM_ComputerVision": ("celebfaces", "none found"),
    "justadudewhohacks/opencv4nodejs": ("opencv4nodejs", "MIT"),
    "timesler/facenet-pytorch": ("facenet_pytorch", "MIT"),
}

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def slugify(name: str) -> str:
    """Lower-case identity slug: runs of characters other than ``a-z0-9`` become one ``_`` (``Robert Downey Jr.`` ->
    ``robert_downey_jr``), so it is safe as a folder name."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
    if not slug:
        raise LeamError(f"identity name {name!r} has no letters or digits to build a folder name from")
    return slug


def raw_github_url(repo: str, commit: str, path: str) -> str:
    """Public raw-file URL of ``path`` at ``commit``; the path is percent-encoded (spaces -> %20).

    raw.githubusercontent.com serves any commit that GitHub stores for the repository's network, including
    commits that exist only on a pull request's head (the face_recognition PR #1285 files rely on that).
    """
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{quote(path, safe='/')}"


def is_safe_relative(path: str) -> bool:
    """True for a plain relative POSIX path without ``..``: what a manifest may name inside a mirror."""
    pure = PurePosixPath(path)
    return bool(path) and not pure.is_absolute() and ".." not in pure.parts and "\\" not in path


def image_id_for(identity: str, file_name: str) -> str:
    """Stable id ``<identity>/<file stem>`` used by every later stage."""
    return f"{identity}/{Path(file_name).stem}"


def read_sample_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a sample manifest; any structural problem is a one-line LeamError.

    Checked: the file parses as CSV, has every column of ``SAMPLE_COLUMNS``, has no empty cells in the
    columns a download needs, identities are slugs, genders are ``female/male/unknown``, ``file`` is a safe
    relative path ending in .jpg/.jpeg/.png, sha256 values are 64 hex digits and image ids are unique.
    """
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"manifest not found: {path} (data.manifest in params.yaml)")
    frame = read_csv_strict(path, f"manifest {path}")
    missing = [c for c in SAMPLE_COLUMNS if c not in frame.columns]
    if missing:
        raise LeamError(f"manifest {path} lacks column(s) {', '.join(missing)}; expected {', '.join(SAMPLE_COLUMNS)}")
    frame = frame.loc[:, list(SAMPLE_COLUMNS)].copy()
    for column in ("identity", "gender", "file", "sha256"):
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise LeamError(f"manifest {path} row {_line(empty)}: empty {column}")
    frame["sha256"] = frame["sha256"].str.lower()
    checks = {
        "identity": (lambda s: bool(_SLUG.match(s)), "is not a lower-case slug (a-z 0-9 _ . -)"),
        "gender": (lambda s: s in GENDERS, f"is not one of {', '.join(GENDERS)}"),
        "file": (lambda s: is_safe_relative(s) and s.lower().endswith(_IMAGE_SUFFIXES),
                 "is not a relative .jpg/.jpeg/.png path inside the mirror"),
        "sha256": (lambda s: bool(_SHA256.match(s)), "is not 64 hex digits"),
    }
    for column, (ok, why) in checks.items():
        bad = ~frame[column].map(ok)
        if bad.any():
            value = frame.loc[bad.idxmax(), column]
            raise LeamError(f"manifest {path} row {_line(bad)}: {column} {value!r} {why}")
    frame["image_id"] = [image_id_for(i, f) for i, f in zip(frame.identity, frame.file)]
    duplicated = frame.image_id.duplicated()
    if duplicated.any():
        raise LeamError(f"manifest {path} row {_line(duplicated)}: image id "
                        f"{frame.image_id[duplicated.idxmax()]!r} is not unique")
    return frame


def read_csv_strict(source, what: str) -> pd.DataFrame:
    """All cells as strings; a file that is not well-formed CSV (bad quoting, not UTF-8, a row with more
    fields than the header, which pandas would otherwise silently shift or truncate) is a LeamError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(source, dtype=str, keep_default_na=False, index_col=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise LeamError(f"cannot parse {what}: {str(exc).splitlines()[0]}") from None


def _line(mask: pd.Series) -> int:
    """1-based line number in the CSV (header = line 1) of the first True in ``mask``."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 2


def _stable_key(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def select_subset(rows: pd.DataFrame, seed: int, max_identities: int = 0, max_images_per_identity: int = 0,
                  min_images_per_identity: int = 0) -> pd.DataFrame:
    """Seeded, nested cap of a manifest (columns ``identity`` and ``image_id`` at least).

    How the choice is made (0 = no cap):
    1. identities with fewer than ``min_images_per_identity`` rows are dropped;
    2. the remaining identities, sorted by name, are shuffled with ``numpy.random.default_rng(seed)`` and the
       first ``max_identities`` are kept;
    3. inside each kept identity the rows, sorted by ``image_id``, are shuffled with
       ``default_rng([seed, crc32(identity)])`` and the first ``max_images_per_identity`` are kept.
    Because each step takes a prefix of a fixed order, raising a cap only adds rows, and the images picked for
    one identity do not depend on which other identities were picked. Output rows are sorted by
    ``identity`` then ``image_id``.
    """
    for name, value in (("data.max_identities", max_identities),
                        ("data.max_images_per_identity", max_images_per_identity),
                        ("data.min_images_per_identity", min_images_per_identity)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise LeamError(f"{name}={value!r} must be a whole number >= 0 (0 = no limit)")
    rows = rows.sort_values(["identity", "image_id"], kind="stable")
    counts = rows.groupby("identity").size()
    identities = sorted(counts.index[counts >= max(min_images_per_identity, 1)])
    if max_identities:
        order = np.random.default_rng(seed).permutation(len(identities))
        identities = sorted(identities[i] for i in order[:max_identities])
    rows = rows[rows.identity.isin(identities)]
    if max_images_per_identity:
        keep = []
        for identity, group in rows.groupby("identity", sort=True):
            order = np.random.default_rng([seed, _stable_key(identity)]).permutation(len(group))
            keep.append(group.iloc[np.sort(order[:max_images_per_identity])])
        rows = pd.concat(keep) if keep else rows.iloc[:0]
    return rows.reset_index(drop=True)


def too_few_images(rows: pd.DataFrame, min_images_per_identity: int) -> np.ndarray:
    """(N,) bool: rows whose identity has fewer than ``min_images_per_identity`` (at least 1) rows.

    Such an identity has no reference photo for LEAM and no same-identity pair; the faces and align
    stages both discard its rows with reason ``too_few_images``.
    """
    if not len(rows):
        return np.zeros(0, dtype=bool)
    sizes = rows.groupby("identity")["image_id"].transform("size").to_numpy()
    return sizes < max(int(min_images_per_identity), 1)


def select_accounted(rows: pd.DataFrame, seed: int, max_identities: int = 0, max_images_per_identity: int = 0,
                     min_images_per_identity: int = 0, path_column: str | None = None
                     ) -> tuple[pd.DataFrame, list[dict], int]:
    """:func:`select_subset`, accounting for every row it leaves out: ``(chosen, discards, not_selected)``.

    Rows of identities with fewer than ``min_images_per_identity`` rows are discards (DISCARD_COLUMNS,
    reason ``too_few_images``, ``path`` from ``path_column`` when given): such an identity has no reference
    photo for LEAM and no same-identity pair. Rows left out by the caps (``max_identities``,
    ``max_images_per_identity``) were deliberately not chosen: they are counted (``not_selected``), not
    listed. So ``len(rows) == len(chosen) + len(discards) + not_selected``.
    """
    if max_images_per_identity and max_images_per_identity < min_images_per_identity:
        raise LeamError(f"data.max_images_per_identity={max_images_per_identity} is below "
                        f"data.min_images_per_identity={min_images_per_identity}: every identity would be left "
                        f"with too few images; raise the cap or lower the minimum")
    too_few = too_few_images(rows, min_images_per_identity)
    dropped = rows[too_few]
    discards = [{"image_id": image_id, "path": str(path) if path_column else "", "reason": TOO_FEW_IMAGES}
                for image_id, path in zip(dropped.image_id, dropped[path_column] if path_column else dropped.image_id)]
    eligible = rows[~too_few]
    chosen = select_subset(eligible, seed, max_identities, max_images_per_identity)
    return chosen, discards, int(len(eligible) - len(chosen))
