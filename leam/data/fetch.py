"""Get image files into ``data/faces/images``: copy or download, verify, write atomically, resume.

Every file is one ``FaceJob``. A job that cannot be completed (missing mirror file, dead link, checksum
mismatch, undecodable image) is not an exception for the caller: it comes back as a ``FetchOutcome`` with a
short ``reason`` tag that the stage counts and writes to ``discards.csv``. Only problems the user must fix
before anything can work (unwritable output folder) are LeamErrors.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from leam.errors import LeamError
from leam.io import sha256_bytes, sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 64 << 20
"""Largest file accepted (bytes); anything bigger is discarded as ``too_large`` (the sample's largest is ~2.5 MB)."""

_PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}
"""HTTP statuses that retrying cannot fix (client errors except timeout / too-early / rate limit)."""


class FetchFailed(Exception):
    """A job failed for a reason that becomes a counted discard (``reason`` is the tag in discards.csv)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FetchSettings:
    """How files are fetched: ``workers`` threads; a download is tried ``1 + retries`` times, waiting
    ``backoff_s * 2**attempt`` seconds before retry ``attempt + 1`` (1 s, 2 s, 4 s, 8 s by default), each try
    limited to ``timeout_s`` seconds of socket inactivity."""

    workers: int = 8
    retries: int = 4
    timeout_s: float = 30.0
    backoff_s: float = 1.0
    user_agent: str = "leam-faces/0.1 (research; +https://github.com)"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise LeamError(f"data.{'download_workers' if name == 'workers' else name}={value!r} "
                                f"must be a whole number >= {low}")
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise LeamError(f"data.timeout_s={self.timeout_s!r} must be a positive number of seconds")


@dataclass(frozen=True)
class FaceJob:
    """One image to put at ``target``.

    Exactly one of ``local`` (a file to copy: mirror or folder source) and ``url`` (http(s)/file URL) is set.
    ``sha256``: expected hash of the fetched bytes (None = unknown). ``postprocess``: bytes -> bytes applied
    after the hash check (e.g. the IMDb-Face crop); raising FetchFailed discards the image.
    """

    image_id: str
    identity: str
    gender: str
    source: str
    target: Path
    local: Path | None = None
    url: str | None = None
    sha256: str | None = None
    postprocess: Callable[[bytes], bytes] | None = None


@dataclass(frozen=True)
class FetchOutcome:
    job: FaceJob
    sha256: str | None = None
    """sha256 of the file written at ``job.target`` (None when discarded)."""
    reason: str | None = None
    """Discard tag, None when the image was kept."""
    reused: bool = False
    """True when a file already present was kept (resume) instead of fetched again."""


def download(url: str, settings: FetchSettings, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """Bytes at ``url`` with retries and exponential backoff; raises FetchFailed ``dead_link`` (HTTP 4xx, which
    retrying cannot fix), ``too_large`` or ``download_failed`` (network errors / 5xx after all retries)."""
    request = urllib.request.Request(url, headers={"User-Agent": settings.user_agent})
    last = ""
    for attempt in range(settings.retries + 1):
        if attempt:
            time.sleep(settings.backoff_s * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise FetchFailed("too_large", f"{url} is over {max_bytes} bytes")
            return data
        except urllib.error.HTTPError as exc:
            if exc.code in _PERMANENT_HTTP:
                raise FetchFailed("dead_link", f"HTTP {exc.code} for {url}") from None
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:  # DNS, refused, reset, timeout, bad URL
            reason = getattr(exc, "reason", exc)
            last = f"{type(exc).__name__}: {reason}"
            if isinstance(exc, ValueError):
                break
        log.debug("try %d/%d of %s failed: %s", attempt + 1, settings.retries + 1, url, last)
    raise FetchFailed("download_failed", f"{url}: {last}")


def read_local(path: Path) -> bytes:
    """Bytes of a local file; raises FetchFailed ``missing`` / ``unreadable`` / ``too_large``."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise FetchFailed("too_large", f"{path} is over {MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise FetchFailed("missing", f"{path} does not exist") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise FetchFailed("unreadable", f"{path}: {exc.strerror or exc}") from None


def _already_done(job: FaceJob) -> str | None:
    """sha256 of ``job.target`` if it can be reused (resume), else None.

    Reused: a file whose hash matches the expected one, or, for post-processed jobs (crops, whose bytes
    cannot be known in advance), any existing file (atomic writes mean it is complete). Jobs without an
    expected hash and without post-processing (folder copies) are always copied again: that is cheap and
    picks up edited photos.
    """
    if not job.target.is_file():
        return None
    if job.sha256 is not None and job.postprocess is None:
        digest = sha256_file(job.target)
        return digest if digest == job.sha256 else None
    if job.postprocess is not None:
        return sha256_file(job.target)
    return None


def run_job(job: FaceJob, settings: FetchSettings) -> FetchOutcome:
    """Fetch, verify, post-process and write one job; FetchFailed becomes a discard outcome."""
    done = _already_done(job)
    if done is not None:
        return FetchOutcome(job, sha256=done, reused=True)
    try:
        data = read_local(job.local) if job.local is not None else download(str(job.url), settings)
        if job.sha256 is not None:
            actual = sha256_bytes(data)
            if actual != job.sha256:
                raise FetchFailed("checksum", f"sha256 {actual[:12]}... != expected {job.sha256[:12]}...")
        if job.postprocess is not None:
            data = job.postprocess(data)
    except FetchFailed as failed:
        log.warning("discarded %s (%s)", job.image_id, failed)
        return FetchOutcome(job, reason=failed.reason)
    try:
        write_bytes_atomic(job.target, data)
    except OSError as exc:
        raise LeamError(f"cannot write {job.target}: {exc.strerror or exc}") from None
    return FetchOutcome(job, sha256=sha256_bytes(data))


def run_jobs(jobs: Sequence[FaceJob], settings: FetchSettings, description: str = "faces") -> list[FetchOutcome]:
    """Run jobs on a thread pool (I/O bound: copies and downloads); outcomes come back in job order."""
    outcomes: list[FetchOutcome | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        futures = {pool.submit(run_job, job, settings): i for i, job in enumerate(jobs)}
        bar = tqdm(as_completed(futures), total=len(jobs), desc=description, unit="img",
                   disable=not settings.progress, leave=False)
        for future in bar:
            outcomes[futures[future]] = future.result()
    return [o for o in outcomes if o is not None]


def prune(images_dir: Path, keep: set[Path]) -> int:
    """Delete files under ``images_dir`` that are not in ``keep`` (left from an earlier, larger selection or
    an interrupted write) and then empty folders, so the folder holds exactly the indexed images.
    Returns the number of files removed."""
    if not images_dir.is_dir():
        return 0
    keep = {p.resolve() for p in keep}
    removed = 0
    for path in sorted(images_dir.rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            if path.resolve() not in keep:
                path.unlink()
                removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
    return removed


def check_readable_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder we can list and read, else a one-line LeamError naming ``what``."""
    if not path.exists():
        raise LeamError(f"{what} not found: {path}")
    if not path.is_dir():
        raise LeamError(f"{what} is not a folder: {path}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise LeamError(f"{what} is not readable: {path} (check its permissions)")
    try:
        next(os.scandir(path), None)
    except OSError as exc:
        raise LeamError(f"{what} is not readable: {path} ({exc.strerror or exc})") from None
    return path
