"""Get image files into ``data/faces/images``: copy or download, verify, write atomically, resume.

Every file is one ``FaceJob``. A job that cannot be completed (missing mirror file, dead link, checksum
mismatch, undecodable image) is not an exception for the caller: it comes back as a ``FetchOutcome`` with a
short ``reason`` tag that the stage counts and writes to ``discards.csv``. Only problems the user must fix
before anything can work (unwritable output folder) are LeamErrors.

Resume: ``dvc repro`` deletes the stage's outputs (``data/faces/images``) before the stage runs, so downloads
are kept in a ``DownloadCache`` outside them (``.cache/downloads``, git- and dvc-ignored), keyed by URL and
verified by sha256; the outputs are filled from it. Crops (IMDb-Face) are cached under (URL, box, margin).

Network failure modes and what they become (``download``):

=========================================  =====================  ========================================
what the host does                          discard reason         retried?
=========================================  =====================  ========================================
HTTP 404 / 410 / other 4xx                  ``dead_link``          no
redirect loop (or > 10 redirects)           ``redirect_loop``      no
HTTP 200 with an empty body                 ``empty_body``         no
``text/html`` or bytes that are no image    ``not_an_image``       no
body bigger than ``MAX_IMAGE_BYTES``        ``too_large``          no
body shorter than its Content-Length        ``truncated``          yes, backoff
(also a chunked body cut short)
HTTP 5xx / 408 / 425 / 429, connection      ``download_failed``    yes, backoff
reset or refused, DNS, per-read timeout
untrusted TLS certificate, malformed URL    ``download_failed``    no
not done within ``deadline_s`` (a host      ``too_slow``           no (the deadline covers every try)
that trickles bytes, stalls, backs off)
=========================================  =====================  ========================================
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from leam.errors import LeamError
from leam.io import sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 64 << 20
"""Largest file accepted (bytes); anything bigger is discarded as ``too_large`` (the sample's largest is ~2.5 MB)."""

_PERMANENT_HTTP = frozenset(range(400, 500)) - {408, 425, 429}
"""HTTP statuses that retrying cannot fix (client errors except timeout / too-early / rate limit)."""

DOWNLOAD_CACHE = Path(".cache") / "downloads"
"""The download cache, relative to the repository root: outside every stage output, git- and dvc-ignored."""

_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
"""Leading bytes of JPEG, PNG, GIF, BMP and TIFF files (WebP is RIFF....WEBP, checked apart)."""

_NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml", "application/javascript")
"""Content-Type prefixes of pages served instead of an image (soft 404s, login walls, error pages)."""


class FetchFailed(Exception):
    """A job failed for a reason that becomes a counted discard (``reason`` is the tag in discards.csv)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _Transient(FetchFailed):
    """A failure that another try may not repeat (5xx, reset, timeout, cut-short body): retried with backoff."""


@dataclass(frozen=True)
class FetchSettings:
    """How files are fetched: ``workers`` threads; a download is tried ``1 + retries`` times, waiting
    ``backoff_s * 2**attempt`` seconds before retry ``attempt + 1`` (1 s, 2 s, 4 s, 8 s by default), each try
    limited to ``timeout_s`` seconds of socket inactivity, and the whole file (every try and wait) to
    ``deadline_s`` seconds of wall-clock time. ``cache_dir``: the ``DownloadCache`` folder (None = no cache)."""

    workers: int = 8
    retries: int = 4
    timeout_s: float = 30.0
    backoff_s: float = 1.0
    deadline_s: float = 120.0
    cache_dir: Path | None = None
    user_agent: str = "leam-faces/0.1 (research; +https://github.com)"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise LeamError(f"data.{'download_workers' if name == 'workers' else name}={value!r} "
                                f"must be a whole number >= {low}")
        for name in ("timeout_s", "deadline_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise LeamError(f"data.{name}={value!r} must be a positive number of seconds")


@dataclass(frozen=True)
class FaceJob:
    """One image to put at ``target``.

    Exactly one of ``local`` (a file to copy: mirror or folder source) and ``url`` (http(s)/file URL) is set.
    ``sha256``: expected hash of the fetched bytes (None = unknown). ``postprocess``: bytes -> bytes applied
    after the hash check (e.g. the IMDb-Face crop); raising FetchFailed discards the image.
    ``postprocess_key``: a string that names the postprocess and all of its inputs (e.g. box and margin), so
    its result can be cached under (url, key) and a changed parameter makes a new result; None = not cached.
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
    postprocess_key: str | None = None


@dataclass(frozen=True)
class FetchOutcome:
    job: FaceJob
    sha256: str | None = None
    """sha256 of the file written at ``job.target`` (None when discarded)."""
    reason: str | None = None
    """Discard tag, None when the image was kept."""
    origin: str = ""
    """Where the kept bytes came from: ``download`` (the network, in this run), ``cache`` (the download
    cache), ``local`` (a mirror or folder copy), ``kept`` (the file at ``job.target`` was already right);
    "" when discarded."""

    @property
    def reused(self) -> bool:
        """True when nothing was fetched or copied again: the target was already right, or the cache had it."""
        return self.origin in ("kept", "cache")


class _Deadline:
    """The wall-clock limit of one file's download (all tries), enforced on its sockets.

    A per-read socket timeout never fires on a host that sends one byte every few seconds, so when the
    deadline passes a timer shuts down every socket opened for the file (``watch`` keeps a duplicate of each
    descriptor, which stays valid after TLS wraps or urllib closes the original): a blocked TLS handshake,
    header or body read then returns at once and the try ends as ``too_slow``. Call ``close`` when done.
    """

    def __init__(self, end: float) -> None:
        self.end = end
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = self._closed = False
        self._timer = threading.Timer(max(end - time.monotonic(), 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self.end

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            if self._fired:
                _shutdown(sock)
            elif not self._closed:
                self._sockets.append(sock.dup())
        return sock

    def _fire(self) -> None:
        with self._lock:
            if not self._closed:
                self._fired = True
                for sock in self._sockets:
                    _shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected
        pass


class _WatchedConnection:
    """Mixin for http.client connections: every socket they open goes to ``deadline.watch``."""

    def __init__(self, *args, deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        create = self._create_connection
        self._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))


class _WatchedHTTPConnection(_WatchedConnection, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    pass


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPConnection, deadline=self._deadline), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPSConnection, deadline=self._deadline), req,
                            context=self._context)


def download(url: str, settings: FetchSettings, max_bytes: int = MAX_IMAGE_BYTES, image: bool = False,
             deadline_s: float | None = None) -> bytes:
    """Bytes at ``url``; every failure is a FetchFailed whose ``reason`` is in the module docstring's table.

    Transient failures (5xx, 408/425/429, reset, refused, per-read timeout, a body shorter than its
    Content-Length) are tried again, ``1 + settings.retries`` tries in all, with exponential backoff; the
    others end at once. The whole download, waits included, ends by ``deadline_s`` seconds (default
    ``settings.deadline_s``). ``image``: also reject pages (``text/html`` ...) and bytes that are no image.
    Redirects are followed (urllib: at most 10, a URL at most 4 times).
    """
    limit = settings.deadline_s if deadline_s is None else deadline_s
    end = time.monotonic() + limit
    failure: FetchFailed = _Transient("download_failed", "no try made")
    for attempt in range(settings.retries + 1):
        if attempt:
            pause = settings.backoff_s * 2 ** (attempt - 1)
            if time.monotonic() + pause >= end:
                raise FetchFailed(failure.reason, f"{url}: {failure.detail}; no time left for try {attempt + 1} "
                                                  f"within data.deadline_s={limit:g} s")
            time.sleep(pause)
        try:
            data, content_type, status = _fetch_once(url, settings, max_bytes, end, limit)
        except _Transient as exc:
            failure = exc
            log.debug("try %d/%d of %s failed: %s", attempt + 1, settings.retries + 1, url, exc)
            continue
        except FetchFailed as exc:
            raise FetchFailed(exc.reason, f"{url}: {exc.detail}") from None
        if not data:
            raise FetchFailed("empty_body", f"{url}: {status} with an empty body")
        if image:
            if content_type.startswith(_NOT_IMAGE_TYPES):
                raise FetchFailed("not_an_image", f"{url}: served {content_type} instead of an image")
            if not is_image_bytes(data):
                raise FetchFailed("not_an_image", f"{url}: first bytes {data[:8]!r} are not JPEG, PNG, GIF, BMP, "
                                                  f"TIFF or WebP")
        return data
    raise FetchFailed(failure.reason, f"{url}: {failure.detail} (after {settings.retries + 1} tries)")


def is_image_bytes(data: bytes) -> bool:
    """True when ``data`` starts like a JPEG, PNG, GIF, BMP, TIFF or WebP file."""
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _fetch_once(url: str, settings: FetchSettings, max_bytes: int, end: float, limit: float
                ) -> tuple[bytes, str, str]:
    """One try: (body, lower-case Content-Type without parameters, status text); raises FetchFailed."""
    deadline = _Deadline(end)
    opener = urllib.request.build_opener(_WatchedHTTPHandler(deadline), _WatchedHTTPSHandler(deadline))
    request = urllib.request.Request(url, headers={"User-Agent": settings.user_agent})
    too_slow = FetchFailed("too_slow", f"not complete within data.deadline_s={limit:g} s")
    try:
        with opener.open(request, timeout=max(min(settings.timeout_s, end - time.monotonic()), 0.001)) as response:
            headers = response.headers
            expected = _content_length(headers)
            if expected is not None and expected > max_bytes:
                raise FetchFailed("too_large", f"Content-Length {expected} is over {max_bytes} bytes")
            read = getattr(response, "read1", None) or response.read
            chunks, size = [], 0
            while chunk := read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchFailed("too_large", f"over {max_bytes} bytes")
                if deadline.expired:
                    raise too_slow
                chunks.append(chunk)
            if deadline.expired:  # the deadline's shutdown ends a blocked read with b""
                raise too_slow
            status = f"HTTP {response.status}" if getattr(response, "status", None) else "response"
    except FetchFailed:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        raise too_slow if deadline.expired else _http_failure(exc) from None
    except Exception as exc:  # every network error becomes a reason; none may abort the stage
        raise too_slow if deadline.expired else _network_failure(exc, settings) from None
    finally:
        deadline.close()
    if expected is not None and size < expected:
        raise _Transient("truncated", f"body cut short: {size} of {expected} bytes (Content-Length)")
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return b"".join(chunks), content_type, status


def _content_length(headers) -> int | None:
    try:
        value = int(headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _http_failure(exc: urllib.error.HTTPError) -> FetchFailed:
    """HTTP status -> FetchFailed: 3xx here means urllib gave up redirecting (a loop), 4xx is permanent."""
    if 300 <= exc.code < 400:
        if "loop" in str(exc.msg):
            return FetchFailed("redirect_loop", f"HTTP {exc.code}: redirects loop (or more than 10)")
        return FetchFailed("dead_link", f"HTTP {exc.code} without a usable Location")
    if exc.code in _PERMANENT_HTTP:
        return FetchFailed("dead_link", f"HTTP {exc.code}")
    return _Transient("download_failed", f"HTTP {exc.code}")


def _network_failure(exc: Exception, settings: FetchSettings) -> FetchFailed:
    """A non-HTTP exception of one try -> FetchFailed (``_Transient`` when another try may succeed)."""
    if isinstance(exc, http.client.IncompleteRead):  # chunked body cut short
        return _Transient("truncated", f"body cut short after {len(exc.partial)} bytes of a chunk")
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, FileNotFoundError):  # file:// URL
        return FetchFailed("dead_link", f"no such file ({reason.filename or reason})")
    if isinstance(reason, str):  # urllib: unknown URL type, no host given
        return FetchFailed("download_failed", reason)
    if isinstance(reason, ssl.SSLCertVerificationError):  # the same certificate next time
        return FetchFailed("download_failed", f"TLS certificate not trusted ({reason.verify_message})")
    if isinstance(reason, TimeoutError):
        return _Transient("download_failed", f"no data for data.timeout_s={settings.timeout_s:g} s")
    if isinstance(reason, (OSError, http.client.HTTPException)):  # DNS, refused, reset, bad status line
        return _Transient("download_failed", f"{type(reason).__name__}: {reason}")
    if isinstance(reason, ValueError):
        return FetchFailed("download_failed", f"bad URL ({reason})")
    log.warning("unexpected %s while downloading: %s", type(exc).__name__, exc)
    return FetchFailed("download_failed", f"{type(exc).__name__}: {exc}")


class DownloadCache:
    """Downloaded (and derived) bytes keyed by URL, outside the stage outputs, so that a rerun fetches only
    what is missing (``dvc repro`` deletes ``data/faces/images`` before the faces stage runs).

    Layout: ``<root>/<key[:2]>/<key>`` holds the bytes and ``<key>.json`` their sha256 and URL, written after
    them (an entry without it is incomplete). ``key`` = sha256 of the URL, or of the URL, a newline and a
    ``derived`` tag for bytes made from the download (an IMDb-Face crop: box and margin). An entry is used only
    when its bytes hash to the recorded sha256 and to the expected one where known; a bad entry is deleted,
    so it is fetched again. Failing to write the cache is a warning, never a discard.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @staticmethod
    def key(url: str, derived: str | None = None) -> str:
        return hashlib.sha256((url if derived is None else f"{url}\n{derived}").encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lock(self, key: str) -> threading.Lock:
        """One lock per key: two jobs on one URL (two faces of one IMDb photo) download it once."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: str, expected_sha256: str | None = None) -> bytes | None:
        """The verified bytes of ``key``, or None (missing, incomplete or corrupt: then deleted)."""
        path = self.path(key)
        meta_path = path.with_name(f"{key}.json")
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = path.read_bytes()
            recorded = meta["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            data, recorded = None, None
        digest = sha256_bytes(data) if data is not None else None
        if digest is not None and digest == recorded and expected_sha256 in (None, digest):
            return data
        log.warning("download cache: %s does not match its sha256; fetching it again", path)
        self.discard(key)
        return None

    def put(self, key: str, data: bytes, **meta: str) -> None:
        path = self.path(key)
        try:
            write_bytes_atomic(path, data)
            write_json_atomic(path.with_name(f"{key}.json"), {"sha256": sha256_bytes(data), "bytes": len(data), **meta})
        except OSError as exc:
            log.warning("download cache: cannot write %s (%s); going on without caching it", path, exc.strerror or exc)

    def discard(self, key: str) -> None:
        path = self.path(key)
        for stale in (path.with_name(f"{key}.json"), path):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("download cache: cannot delete %s (%s)", stale, exc.strerror or exc)


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


def _target_matches(target: Path, sha256: str | None) -> bool:
    """True when ``target`` is a file whose sha256 is ``sha256`` (atomic writes mean it is complete)."""
    return sha256 is not None and target.is_file() and sha256_file(target) == sha256


def _check_sha256(job: FaceJob, data: bytes) -> None:
    if job.sha256 is not None:
        actual = sha256_bytes(data)
        if actual != job.sha256:
            raise FetchFailed("checksum", f"sha256 {actual[:12]}... != expected {job.sha256[:12]}...")


def _source_bytes(job: FaceJob, settings: FetchSettings, cache: DownloadCache | None) -> tuple[bytes, str]:
    """The job's verified input bytes and their origin (``local``, ``cache`` or ``download``)."""
    if job.local is not None:
        data = read_local(job.local)
        _check_sha256(job, data)
        return data, "local"
    url = str(job.url)
    if cache is None:
        data = download(url, settings, image=True)
        _check_sha256(job, data)
        return data, "download"
    key = cache.key(url)
    with cache.lock(key):
        data = cache.get(key, job.sha256)
        if data is not None:
            return data, "cache"
        data = download(url, settings, image=True)
        _check_sha256(job, data)  # only verified bytes enter the cache
        cache.put(key, data, url=url)
    return data, "download"


def _job_bytes(job: FaceJob, settings: FetchSettings, cache: DownloadCache | None) -> tuple[bytes, str]:
    """The bytes that belong at ``job.target`` and their origin; raises FetchFailed."""
    derived = None
    if cache is not None and job.url is not None and job.postprocess is not None and job.postprocess_key:
        derived = cache.key(job.url, job.postprocess_key)
        data = cache.get(derived)
        if data is not None:
            return data, "cache"
    data, origin = _source_bytes(job, settings, cache)
    if job.postprocess is not None:
        data = job.postprocess(data)
        if derived is not None:
            cache.put(derived, data, url=str(job.url), derived=str(job.postprocess_key))
    return data, origin


def run_job(job: FaceJob, settings: FetchSettings, cache: DownloadCache | None = None) -> FetchOutcome:
    """Fetch (or take from ``cache``), verify, post-process and write one job; FetchFailed becomes a discard.

    A target that already holds the right bytes is left alone (``origin`` ``kept``): for a job with a known
    sha256 that is checked first, for crops and folder copies after their bytes are known.
    """
    if job.postprocess is None and _target_matches(job.target, job.sha256):
        return FetchOutcome(job, sha256=job.sha256, origin="kept")
    try:
        data, origin = _job_bytes(job, settings, cache)
    except FetchFailed as failed:
        log.warning("discarded %s (%s)", job.image_id, failed)
        return FetchOutcome(job, reason=failed.reason)
    digest = sha256_bytes(data)
    if _target_matches(job.target, digest):
        return FetchOutcome(job, sha256=digest, origin=origin if origin == "download" else "kept")
    try:
        write_bytes_atomic(job.target, data)
    except OSError as exc:
        raise LeamError(f"cannot write {job.target}: {exc.strerror or exc}") from None
    return FetchOutcome(job, sha256=digest, origin=origin)


def run_jobs(jobs: Sequence[FaceJob], settings: FetchSettings, description: str = "faces") -> list[FetchOutcome]:
    """Run jobs on a thread pool (I/O bound: copies and downloads); outcomes come back in job order.

    Downloads go through the ``DownloadCache`` at ``settings.cache_dir`` when it is set."""
    cache = DownloadCache(settings.cache_dir) if settings.cache_dir is not None else None
    outcomes: list[FetchOutcome | None] = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        futures = {pool.submit(run_job, job, settings, cache): i for i, job in enumerate(jobs)}
        bar = tqdm(as_completed(futures), total=len(jobs), desc=description, unit="img",
                   disable=not settings.progress, leave=False)
        try:
            for future in bar:
                outcomes[futures[future]] = future.result()
        except BaseException:  # Ctrl-C or a LeamError: start none of the queued jobs (the cache keeps what is done)
            for future in futures:
                future.cancel()
            raise
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
