"""Downloads (leam/data/fetch.py) against a local HTTP server that fails in every way a real host does.

Each failure mode is a discard with its reason or a retry, never an abort or a stall; the download cache
lets a rerun (after an interruption, or after `dvc repro` deleted data/faces/images) fetch only what is missing.
All timeouts are short: the whole file runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from leam.data import collect_faces, fetch, write_outputs
from leam.data.fetch import DOWNLOAD_CACHE, DownloadCache, FetchFailed, FetchSettings, download
from leam.data.manifest import SAMPLE_COLUMNS
from leam.errors import LeamError
from stages import faces as faces_stage

DEADLINE_S = 0.8
SETTINGS = FetchSettings(workers=4, retries=2, timeout_s=0.5, backoff_s=0.01, deadline_s=DEADLINE_S, progress=False)


def _jpeg(seed: int, size: tuple[int, int] = (60, 80)) -> bytes:
    """A small, valid, seeded JPEG (noise is fine: nothing here detects faces)."""
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


class _Handler(BaseHTTPRequestHandler):
    """Paths: ``/img/<name>`` serves ``server.files[name]``; every other path is one failure mode."""

    protocol_version = "HTTP/1.1"  # chunked bodies need it; every response still closes the connection
    server: "_Server"

    def log_message(self, *args):  # keep test output quiet
        pass

    def finish(self):  # some handlers reset the connection on purpose
        try:
            super().finish()
        except OSError:
            pass

    def _head(self, status: int = 200, length: int | None = None, content_type: str = "image/jpeg", **extra):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _trickle(self, data: bytes, pause_s: float = 0.02) -> None:
        """Send ``data`` one byte at a time until the client hangs up or the server stops."""
        try:
            for byte in data:
                if self.server.stopping.wait(pause_s):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            pass

    def _reset(self) -> None:
        """Close with SO_LINGER 0: the client sees a TCP reset."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def do_GET(self):
        path = self.path
        with self.server.lock:
            self.server.counts[path] += 1
            nth = self.server.counts[path]
        image = self.server.files.get("a.jpg", b"")
        if path in self.server.down or path == "/flaky" or (path == "/flaky-once" and nth == 1):
            self.send_error(503)
        elif path.startswith("/img/") and path[5:] in self.server.files:
            body = self.server.files[path[5:]]
            self._head(length=len(body))
            self.wfile.write(body)
        elif path == "/flaky-once":
            self._head(length=len(image))
            self.wfile.write(image)
        elif path == "/reset" or (path == "/reset-once" and nth == 1):
            self._reset()
        elif path == "/reset-once":
            self._head(length=len(image))
            self.wfile.write(image)
        elif path == "/short":  # Content-Length larger than what arrives
            self._head(length=len(image))
            self.wfile.write(image[: len(image) // 2])
        elif path == "/chunked-short":  # one chunk, then the connection ends without the last chunk
            self._head(Transfer_Encoding="chunked")
            half = image[: len(image) // 2]
            self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
        elif path == "/empty":
            self._head(length=0)
        elif path == "/html":
            page = b"<!DOCTYPE html><html><body>Sign in to see this photo</body></html>"
            self._head(length=len(page), content_type="text/html; charset=utf-8")
            self.wfile.write(page)
        elif path == "/octet-html":  # a page served with an image-neutral type: caught by its bytes
            page = b"<!DOCTYPE html><html><body>Not found</body></html>"
            self._head(length=len(page), content_type="application/octet-stream")
            self.wfile.write(page)
        elif path in ("/loop", "/loop-a", "/loop-b"):
            self._head(302, length=0, Location={"/loop": "/loop", "/loop-a": "/loop-b", "/loop-b": "/loop-a"}[path])
        elif path == "/redirect":
            self._head(302, length=0, Location="/img/a.jpg")
        elif path == "/trickle":  # a valid image, one byte every 20 ms: never silent for a whole read timeout
            self._head(length=len(image))
            self._trickle(image)
        elif path == "/trickle-headers":  # even the status line and headers come one byte at a time
            self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"x" * 10_000 + b"\r\n\r\n")
        elif path == "/stall":  # headers, then silence
            self._head(length=len(image))
            self.wfile.flush()
            self.server.stopping.wait(5)
        else:
            self.send_error(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # trickling handlers must not hold up shutdown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {"a.jpg": _jpeg(0)}
        self.counts: Counter[str] = Counter()
        self.down: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):  # resets and hang-ups are the point of these tests
        pass


@pytest.fixture()
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.stopping.set()
    srv.shutdown()
    srv.server_close()


# ----------------------------------------------------------------------------------- one URL, one outcome

@pytest.mark.parametrize("path, reason, requests", [
    ("/gone", "dead_link", 1),            # 404: not retried
    ("/flaky", "download_failed", 3),     # 503 on every try: retried with backoff, then counted
    ("/reset", "download_failed", 3),     # connection reset: retried, then counted
    ("/short", "truncated", 3),           # Content-Length larger than the body: retried, then counted
    ("/chunked-short", "truncated", 3),   # chunked body without its last chunk
    ("/empty", "empty_body", 1),
    ("/html", "not_an_image", 1),         # text/html instead of an image
    ("/octet-html", "not_an_image", 1),   # HTML bytes under a neutral Content-Type
    ("/loop", "redirect_loop", None),
    ("/loop-a", "redirect_loop", None),
    ("/trickle", "too_slow", 1),          # one byte every 20 ms: only the deadline stops it
    ("/trickle-headers", "too_slow", 1),
    ("/stall", "download_failed", 3),     # silent for longer than timeout_s on every try
])
def test_each_failure_mode_is_a_reason_not_an_abort_or_a_stall(server, path, reason, requests):
    settings = FetchSettings(workers=1, retries=2, timeout_s=0.2, backoff_s=0.01, deadline_s=DEADLINE_S,
                             progress=False)
    started = time.monotonic()
    with pytest.raises(FetchFailed) as failed:
        download(server.base + path, settings, image=True)
    elapsed = time.monotonic() - started
    assert failed.value.reason == reason, str(failed.value)
    assert path in str(failed.value) and "\n" not in str(failed.value)
    assert elapsed < DEADLINE_S + 0.5, f"{path} took {elapsed:.2f} s"
    if requests is None:
        assert 2 <= server.counts[path] + server.counts.get("/loop-b", 0) <= 11  # urllib's redirect limits
    else:
        assert server.counts[path] == requests


@pytest.mark.parametrize("path, requests", [("/img/a.jpg", 1), ("/redirect", 1), ("/flaky-once", 2),
                                            ("/reset-once", 2)])
def test_good_and_transiently_failing_urls_give_the_image(server, path, requests):
    assert download(server.base + path, SETTINGS, image=True) == server.files["a.jpg"]
    assert server.counts[path] == requests


def test_the_deadline_covers_backoff_waits(server):
    """A host that answers 503 does not keep a file for retries x backoff: the deadline ends it first."""
    settings = FetchSettings(workers=1, retries=4, timeout_s=0.5, backoff_s=10.0, deadline_s=0.5, progress=False)
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="no time left") as failed:
        download(server.base + "/flaky", settings)
    assert failed.value.reason == "download_failed" and time.monotonic() - started < 0.5
    assert server.counts["/flaky"] == 1


def test_too_large_and_bad_settings(server):
    with pytest.raises(FetchFailed) as failed:
        download(server.base + "/img/a.jpg", SETTINGS, max_bytes=100)
    assert failed.value.reason == "too_large"
    with pytest.raises(LeamError, match="data.deadline_s=0"):
        FetchSettings(deadline_s=0)


def test_tables_may_be_any_bytes_but_not_empty(server):
    server.files["t.csv"] = b"identity,gender\nx,male\n"
    assert download(server.base + "/img/t.csv", SETTINGS) == server.files["t.csv"]  # image=False: no sniffing
    with pytest.raises(FetchFailed, match="empty body"):
        download(server.base + "/empty", SETTINGS)


# ----------------------------------------------------------------------------------- the faces stage

def _manifest(path: Path, urls: dict[str, str], sha: dict[str, str]) -> pd.DataFrame:
    """A sample-style manifest with one identity per URL (run with data.min_images_per_identity=1)."""
    rows = [{"identity": f"p{i:02d}", "gender": "female" if i % 2 else "male", "file": f"images/p{i:02d}/{name}.jpg",
             "source": "test", "url": url, "sha256": sha[name], "source_repo": "r", "source_commit": "c",
             "source_path": name, "licence": "none"} for i, (name, url) in enumerate(urls.items())]
    frame = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    frame.to_csv(path, index=False)
    return frame


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _params(manifest: Path, **data) -> dict:
    return {"seed": 0, "data": {"source": "sample", "manifest": str(manifest), "mirror": "", "download_workers": 3,
                                "min_images_per_identity": 1, "retries": 0, "timeout_s": 0.5,
                                "deadline_s": DEADLINE_S, **data}}


def test_faces_outputs_count_every_failure_mode_as_a_discard(tmp_path, server, monkeypatch):
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    modes = {"/gone": "dead_link", "/flaky": "download_failed", "/reset": "download_failed", "/short": "truncated",
             "/chunked-short": "truncated", "/empty": "empty_body", "/html": "not_an_image",
             "/octet-html": "not_an_image", "/loop": "redirect_loop", "/trickle": "too_slow",
             "/trickle-headers": "too_slow"}
    urls = {"good": server.base + "/img/a.jpg", **{p.strip("/"): server.base + p for p in modes}}
    sha = {name: _sha(server.files["a.jpg"]) for name in urls}
    manifest = _manifest(tmp_path / "manifest.csv", urls, sha)
    params = _params(tmp_path / "manifest.csv", download_workers=6, timeout_s=0.3)
    out, cache = tmp_path / "faces", tmp_path / "cache"
    started = time.monotonic()
    result = collect_faces(params, out, root=tmp_path, progress=False, cache_dir=cache)  # what stages.faces runs
    write_outputs(result, out)
    assert time.monotonic() - started < 3 * DEADLINE_S  # the slow hosts run in parallel, each bounded
    assert len(list(cache.rglob("*.json"))) == 1  # only the good image entered the cache
    discards = pd.read_csv(out / "discards.csv")
    ids = dict(zip(manifest.source_path, manifest.identity + "/" + manifest.source_path))
    assert dict(zip(discards.image_id, discards.reason)) == {ids[p.strip("/")]: r for p, r in modes.items()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 1 and summary["discarded"] == len(modes)
    assert summary["discarded_by_reason"] == dict(sorted(Counter(modes.values()).items()))
    assert pd.read_csv(out / "index.csv").image_id.tolist() == [ids["good"]]


def test_stage_option_for_the_cache_defaults_outside_the_outputs():
    assert faces_stage.build_parser().parse_args([]).download_cache == DOWNLOAD_CACHE.as_posix()


def _good_site(server, n: int = 6) -> tuple[dict[str, str], dict[str, str]]:
    names = [f"f{i}" for i in range(n)]
    for i, name in enumerate(names):
        server.files[f"{name}.jpg"] = _jpeg(i + 1)
    return ({name: f"{server.base}/img/{name}.jpg" for name in names},
            {name: _sha(server.files[f"{name}.jpg"]) for name in names})


def test_dvc_deleting_the_outputs_costs_no_download(tmp_path, server, monkeypatch):
    """`dvc repro` removes data/faces/images before the stage runs: the cache refills it without the network."""
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    urls, sha = _good_site(server)
    _manifest(tmp_path / "manifest.csv", urls, sha)
    params, out = _params(tmp_path / "manifest.csv"), tmp_path / "data" / "faces"
    first = collect_faces(params, out, root=tmp_path, progress=False)
    assert first.downloaded == 6 and first.reused == 0
    assert len(list((tmp_path / DOWNLOAD_CACHE).rglob("*.json"))) == 6  # <root>/.cache/downloads, not in out
    shutil.rmtree(out / "images")
    second = collect_faces(params, out, root=tmp_path, progress=False)
    assert second.downloaded == 0 and second.reused == 6 and sum(server.counts.values()) == 6
    assert second.index.equals(first.index)
    for row in second.index.itertuples():
        assert _sha((tmp_path / row.path).read_bytes()) == row.sha256


def test_an_interrupted_batch_resumes_with_only_the_missing_files(tmp_path, server, monkeypatch):
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    urls, sha = _good_site(server)
    _manifest(tmp_path / "manifest.csv", urls, sha)
    out = tmp_path / "data" / "faces"
    real_download, calls = fetch.download, []

    def interrupted_after_three(url, *args, **kwargs):
        calls.append(url)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C (or a killed `dvc repro`) in the middle of the batch
        return real_download(url, *args, **kwargs)

    monkeypatch.setattr(fetch, "download", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        collect_faces(_params(tmp_path / "manifest.csv", download_workers=1), out, root=tmp_path, progress=False)
    fetched_first = sum(server.counts.values())  # 3, or 4 when the worker took the next job before the cancel
    assert 3 <= fetched_first < 6
    monkeypatch.setattr(fetch, "download", real_download)
    shutil.rmtree(out / "images", ignore_errors=True)  # as `dvc repro` does before rerunning the stage
    result = collect_faces(_params(tmp_path / "manifest.csv"), out, root=tmp_path, progress=False)
    assert len(result.index) == 6 and result.discards.empty
    assert result.downloaded == 6 - fetched_first and result.reused == fetched_first
    for url in urls.values():  # each file crossed the network exactly once over both runs
        assert server.counts[url[len(server.base):]] == 1, url


def test_an_outage_resumes_with_only_the_failed_files(tmp_path, server, monkeypatch):
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    urls, sha = _good_site(server)
    _manifest(tmp_path / "manifest.csv", urls, sha)
    params, out = _params(tmp_path / "manifest.csv"), tmp_path / "data" / "faces"
    server.down = {f"/img/f{i}.jpg" for i in (3, 4, 5)}
    first = collect_faces(params, out, root=tmp_path, progress=False)
    assert set(first.discards.reason) == {"download_failed"} and len(first.index) == 3
    server.down = set()
    shutil.rmtree(out / "images")
    second = collect_faces(params, out, root=tmp_path, progress=False)
    assert len(second.index) == 6 and second.downloaded == 3
    assert [server.counts[f"/img/f{i}.jpg"] for i in range(6)] == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("corruption", ["bytes", "bytes_and_record"])
def test_a_corrupt_cached_file_is_fetched_again(tmp_path, server, monkeypatch, corruption):
    """A flipped byte fails the entry's own sha256; bytes whose record was rewritten too fail the manifest's."""
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    urls, sha = _good_site(server, 2)
    _manifest(tmp_path / "manifest.csv", urls, sha)
    params, out = _params(tmp_path / "manifest.csv"), tmp_path / "data" / "faces"
    collect_faces(params, out, root=tmp_path, progress=False)
    cache = DownloadCache(tmp_path / DOWNLOAD_CACHE)
    entry = cache.path(cache.key(urls["f0"]))
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    if corruption == "bytes_and_record":
        record = entry.with_name(f"{entry.name}.json")
        record.write_text(json.dumps(dict(json.loads(record.read_text()), sha256=_sha(bytes(data)))))
    shutil.rmtree(out / "images")
    result = collect_faces(params, out, root=tmp_path, progress=False)
    assert result.discards.empty and result.downloaded == 1
    assert server.counts["/img/f0.jpg"] == 2 and server.counts["/img/f1.jpg"] == 1
    assert _sha(entry.read_bytes()) == sha["f0"]  # the cache entry was replaced by the good bytes
    for row in result.index.itertuples():
        assert _sha((tmp_path / row.path).read_bytes()) == row.sha256


# ----------------------------------------------------------------------------------- IMDb-Face crops

def test_a_changed_crop_margin_crops_again_without_downloading(tmp_path, server):
    rows = []
    for i in range(2):
        server.files[f"c{i}.jpg"] = _jpeg(10 + i, size=(200, 160))
        rows.append({"name": "Some Person", "index": "nm1", "image": f"c{i}.jpg", "rect": "40 50 120 150",
                     "height width": "200 160", "url": f"{server.base}/img/c{i}.jpg"})
    pd.DataFrame(rows).to_csv(tmp_path / "imdb.csv", index=False)
    out = tmp_path / "data" / "faces"

    def run(margin: float):
        params = _params(tmp_path / "unused.csv", source="imdb_face", imdb_csv=str(tmp_path / "imdb.csv"),
                         crop_margin=margin, min_images_per_identity=2)
        result = collect_faces(params, out, root=tmp_path, progress=False)
        shapes = [cv2.imdecode(np.frombuffer((tmp_path / p).read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape[:2]
                  for p in result.index.path]
        return result, shapes

    tight, tight_shapes = run(0.1)
    assert tight.downloaded == 2 and tight_shapes == [(120, 96), (120, 96)]  # 100 x 80 box, 10% on each side
    wide, wide_shapes = run(0.5)  # the old crops are in place: they must not be kept
    assert wide_shapes == [(200, 160), (200, 160)] and wide.downloaded == 0  # re-cropped from the cached photos
    assert server.counts["/img/c0.jpg"] == server.counts["/img/c1.jpg"] == 1
    again, again_shapes = run(0.1)  # cached crop of (url, box, 0.1): nothing decoded or fetched
    assert again_shapes == tight_shapes and again.reused == 2 and again.downloaded == 0
    assert sum(server.counts.values()) == 2
