"""Tests for leam/data (the faces stage): manifest, seeded caps, mirror copy, downloads, IMDb-Face, folder, errors."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import dlib
import numpy as np
import pandas as pd
import pytest

from leam.data import collect_faces, read_sample_manifest, select_subset, write_outputs
from leam.data.manifest import INDEX_COLUMNS, SAMPLE_COLUMNS
from leam.errors import LeamError
from stages import faces as faces_stage

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "manifests" / "sample.csv"


def _params(tmp_path: Path, **data) -> dict:
    base = {"source": "sample", "manifest": str(SAMPLE), "mirror": "", "max_identities": 0,
            "max_images_per_identity": 0, "min_images_per_identity": 2, "imdb_csv": "", "folder_root": "",
            "download_workers": 4, "retries": 1, "timeout_s": 5}
    base.update(data)
    return {"seed": 0, "data": base}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return read_sample_manifest(SAMPLE)


def _small_manifest(sample: pd.DataFrame, small_slice: pd.DataFrame, path: Path) -> pd.DataFrame:
    rows = sample[sample.file.isin(small_slice.file)].loc[:, list(SAMPLE_COLUMNS)]
    rows.to_csv(path, index=False)
    return rows


# ----------------------------------------------------------------------------------- the committed manifest

def test_sample_manifest_matches_mirror(sample, mirror_manifest):
    assert len(sample) == 854 and sample.identity.nunique() == 45
    merged = sample.merge(mirror_manifest, on="file", suffixes=("", "_mirror"), validate="one_to_one")
    assert len(merged) == len(mirror_manifest)
    for column in ("identity", "gender", "sha256", "source_repo", "source_commit", "source_path"):
        assert (merged[column] == merged[f"{column}_mirror"]).all(), column
    # URL = raw.githubusercontent.com/<repo>/<commit>/<percent-encoded path>, PR #1285 commit included
    for row in merged.itertuples():
        url = urlparse(row.url)
        assert (url.scheme, url.netloc) == ("https", "raw.githubusercontent.com")
        assert unquote(url.path) == f"/{row.source_repo}/{row.source_commit}/{row.source_path}"
        assert " " not in row.url
    pr = merged[merged.source_commit == "bcd68c33335bf190cf66a565669a3571d4c8011a"]
    assert len(pr) == 16 and pr.url.str.startswith(
        "https://raw.githubusercontent.com/ageitgey/face_recognition/bcd68c33335bf190cf66a565669a3571d4c8011a/").all()
    assert set(sample.licence[sample.source == "celebfaces"]) == {"none found"}
    assert set(sample.licence[sample.source == "deepface"]) == {"MIT"}


def test_select_subset_is_seeded_and_nested(sample):
    a = select_subset(sample, seed=0, max_identities=5, max_images_per_identity=3)
    assert a.identity.nunique() == 5 and (a.groupby("identity").size() == 3).all()
    assert a.equals(select_subset(sample, seed=0, max_identities=5, max_images_per_identity=3))
    bigger = select_subset(sample, seed=0, max_identities=10, max_images_per_identity=4)
    assert set(a.image_id) <= set(bigger.image_id)
    other = select_subset(sample, seed=1, max_identities=5, max_images_per_identity=3)
    assert set(other.image_id) != set(a.image_id)
    assert len(select_subset(sample, seed=0)) == 854
    counts = sample.groupby("identity").size()
    assert set(select_subset(sample, seed=0, min_images_per_identity=30).identity) == set(counts.index[counts >= 30])
    with pytest.raises(LeamError, match="max_identities"):
        select_subset(sample, seed=0, max_identities=-1)


# ----------------------------------------------------------------------------------- sample from the mirror

def test_sample_from_mirror_resume_and_prune(tmp_path, faces_mirror, sample, monkeypatch):
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    out = tmp_path / "faces"
    params = _params(tmp_path, mirror=str(faces_mirror), max_identities=4, max_images_per_identity=3)
    result = collect_faces(params, out, root=tmp_path, progress=False)
    write_outputs(result, out)
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == list(INDEX_COLUMNS) and len(index) == 12 and index.image_id.is_unique
    assert list(index.sort_values(["identity", "path"]).image_id) == list(index.image_id)
    for row in index.itertuples():
        written = tmp_path / row.path
        assert row.path.startswith("faces/images/") and _sha(written) == row.sha256
        assert row.sha256 == sample.set_index("image_id").sha256[row.image_id]
        assert row.image_id == f"{row.identity}/{written.stem}"
    assert result.summary["images"] == 12 and result.summary["discarded"] == 0 and result.reused == 0
    # resume: nothing fetched again; a smaller cap removes the files no longer selected
    again = collect_faces(_params(tmp_path, mirror=str(faces_mirror), max_identities=4, max_images_per_identity=2),
                          out, root=tmp_path, progress=False)
    assert again.reused == 8 and again.pruned == 4
    assert sorted(p.relative_to(tmp_path).as_posix() for p in out.rglob("*.*") if p.parent != out) == \
        sorted(again.index.path)


def test_mirror_checksum_missing_and_unreadable_files_are_counted(tmp_path, faces_mirror, sample, small_slice):
    mirror = tmp_path / "mirror"
    rows = _small_manifest(sample, small_slice, tmp_path / "manifest.csv")
    for file in rows.file:
        (mirror / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces_mirror / file, mirror / file)
    corrupt, missing, unreadable = rows.file.iloc[0], rows.file.iloc[4], rows.file.iloc[8]
    data = bytearray((mirror / corrupt).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (mirror / corrupt).write_bytes(bytes(data))
    (mirror / missing).unlink()
    (mirror / unreadable).unlink()
    (mirror / unreadable).mkdir()  # a folder where a file should be: reading it fails
    params = _params(tmp_path, manifest=str(tmp_path / "manifest.csv"), mirror=str(mirror))
    result = collect_faces(params, tmp_path / "faces", root=tmp_path, progress=False)
    reasons = dict(zip(result.discards.image_id, result.discards.reason))
    ids = rows.set_index("file").index.map(dict(zip(rows.file, read_sample_manifest(tmp_path / "manifest.csv").image_id)))
    assert reasons == {ids[0]: "checksum", ids[4]: "missing", ids[8]: "unreadable"}
    assert result.summary["discarded_by_reason"] == {"checksum": 1, "missing": 1, "unreadable": 1}
    assert not (tmp_path / "faces" / "images" / Path(corrupt).relative_to("images")).exists()
    # every manifest row is either indexed or discarded, never both
    assert set(result.index.image_id) | set(result.discards.image_id) == set(ids)
    assert not set(result.index.image_id) & set(result.discards.image_id)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_mirror_folder_is_one_line_error(tmp_path, kind, monkeypatch):
    mirror = tmp_path / "nowhere"
    if kind == "file":
        mirror.write_text("not a folder")
    monkeypatch.setenv("LEAM_FACES_MIRROR", str(mirror))
    with pytest.raises(LeamError, match="LEAM_FACES_MIRROR") as info:
        collect_faces(_params(tmp_path), tmp_path / "faces", root=tmp_path, progress=False)
    assert "\n" not in str(info.value) and str(mirror) in str(info.value)


@pytest.mark.parametrize("content, match", [
    ("identity,gender,file\nx,male,images/x/a.jpg\n", "lacks column"),
    ("{header}\nx,male,../../etc/a.jpg,s,u,{sha},r,c,p,l\n", "not a relative"),
    ("{header}\nx,male,images/x/a.jpg,s,u,abc,r,c,p,l\n", "64 hex"),
    ("{header}\nx,woman,images/x/a.jpg,s,u,{sha},r,c,p,l\n", "gender"),
    ("{header}\nx,male,images/x/a.jpg,s,u,{sha},r,c,p,l,extra\n", "cannot parse"),
    ("{header}\nx,male,\"images/x/a.jpg,s,u,{sha},r,c,p,l\n", "cannot parse"),
    ("{header}\nx,male,images/x/a.jpg,s,u,{sha},r,c,p,l\nx,male,images/x/a.png,s,u,{sha},r,c,p,l\n", "not unique"),
])
def test_malformed_manifest_is_one_line_error(tmp_path, content, match):
    path = tmp_path / "manifest.csv"
    path.write_text(content.format(header=",".join(SAMPLE_COLUMNS), sha="ab" * 32))
    with pytest.raises(LeamError, match=match) as info:
        collect_faces(_params(tmp_path, manifest=str(path), mirror=str(tmp_path)), tmp_path / "o", progress=False)
    assert "\n" not in str(info.value)


def test_stage_gets_the_whole_sample_from_the_mirror(tmp_path, faces_mirror, sample, monkeypatch):
    monkeypatch.setenv("LEAM_FACES_MIRROR", str(faces_mirror))
    params = tmp_path / "params.yaml"
    params.write_text(f"seed: 0\ndata:\n  source: sample\n  manifest: {SAMPLE}\n  mirror: ''\n")
    out = tmp_path / "faces"
    assert faces_stage.run_stage("faces", faces_stage.main, faces_stage.build_parser(),
                                 ["--params", str(params), "--out", str(out), "--no-progress"]) == 0
    index, discards = pd.read_csv(out / "index.csv"), pd.read_csv(out / "discards.csv")
    assert list(discards.columns) == ["image_id", "path", "reason"]
    assert set(index.image_id) | set(discards.image_id) == set(sample.image_id)
    assert len(index) == 854 and discards.empty
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 854 and summary["identities"] == 45
    assert summary["images_by_gender"] == {"female": 350, "male": 504, "unknown": 0}


def test_bad_source_via_stage_is_one_error_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\ndata:\n  source: kaggle\n")
    code = faces_stage.run_stage("faces", faces_stage.main, faces_stage.build_parser(),
                                 ["--params", str(params), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: data.source='kaggle' is not valid; choose one of: sample, imdb_face, folder"]


# ----------------------------------------------------------------------------------- downloads over HTTP

class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path.startswith("/flaky"):
            self.send_error(503)
            return
        super().do_GET()


@pytest.fixture()
def http_root(tmp_path):
    """(folder served, base URL) of a local HTTP server on an ephemeral port."""
    served = tmp_path / "www"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_sample_download_verifies_and_counts_failures(tmp_path, http_root, faces_mirror, sample, small_slice,
                                                      monkeypatch):
    monkeypatch.delenv("LEAM_FACES_MIRROR", raising=False)
    served, base = http_root
    rows = _small_manifest(sample, small_slice, tmp_path / "unused.csv").head(6).copy()
    for i, file in enumerate(rows.file):
        shutil.copyfile(faces_mirror / file, served / f"{i}.jpg")
    rows["url"] = [f"{base}/{i}.jpg" for i in range(len(rows))]
    rows.iloc[1, rows.columns.get_loc("url")] = f"{base}/gone.jpg"     # 404: dead link, not retried
    rows.iloc[2, rows.columns.get_loc("url")] = f"{base}/flaky/x.jpg"  # 503 on every try
    rows.iloc[3, rows.columns.get_loc("url")] = f"{base}/4.jpg"         # another photo: checksum
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    params = _params(tmp_path, manifest=str(tmp_path / "manifest.csv"), retries=2)
    result = collect_faces(params, tmp_path / "faces", root=tmp_path, progress=False, backoff_s=0.01)
    ids = read_sample_manifest(tmp_path / "manifest.csv").image_id
    assert dict(zip(result.discards.image_id, result.discards.reason)) == {
        ids[1]: "dead_link", ids[2]: "download_failed", ids[3]: "checksum"}
    assert sorted(result.index.image_id) == sorted(ids[[0, 4, 5]])
    for row in result.index.itertuples():
        assert _sha(tmp_path / row.path) == row.sha256


# ----------------------------------------------------------------------------------- IMDb-Face

def _detect(detector, bgr: np.ndarray):
    """dlib HOG faces (what the align stage uses) on at most 400 px, upsampling only small images."""
    scale = min(1.0, 400 / max(bgr.shape[:2]))
    small = cv2.resize(bgr, None, fx=scale, fy=scale) if scale < 1 else bgr
    return detector(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 0 if min(small.shape[:2]) >= 200 else 1)


def test_imdb_face_downloads_crops_and_counts_dead_links(tmp_path, http_root, small_slice):
    served, base = http_root
    detector = dlib.get_frontal_face_detector()
    records = []
    for k, row in enumerate(small_slice[small_slice.identity.isin(small_slice.identity.unique()[:2])].itertuples()):
        image = cv2.imread(row.abspath, cv2.IMREAD_COLOR)
        scale = 400 / max(image.shape[:2])  # the detector on a bounded size keeps the test fast
        small = cv2.resize(image, None, fx=scale, fy=scale) if scale < 1 else image
        faces = _detect(detector, small)
        if len(faces) != 1:
            continue
        shutil.copyfile(row.abspath, served / f"{k}.jpg")
        # annotate in a half-size frame ("height width" of the CSV) so the crop must rescale the box
        f, s = faces[0], 0.5 / min(scale, 1.0)
        rect = f"{f.left() * s:.0f} {f.top() * s:.0f} {f.right() * s:.0f} {f.bottom() * s:.0f}"
        records.append({"name": row.identity.replace("_", " ").title(), "index": "", "image": f"{k}.jpg", "rect": rect,
                        "height width": f"{image.shape[0] // 2} {image.shape[1] // 2}", "url": f"{base}/{k}.jpg"})
    names = pd.DataFrame(records).name.unique()
    assert len(names) == 2 and len(records) >= 4
    index_of = {n: f"nm{1000 + i}" for i, n in enumerate(names)}
    for r in records:
        r["index"] = index_of[r["name"]]
    records.append(dict(records[0], image="dead.jpg", url=f"{base}/dead.jpg"))
    records.append(dict(records[0], image="bad.jpg", rect="10 10 x 40"))
    records.append({"name": "Lonely Person", "index": "nm9", "image": "1.jpg", "rect": "1 1 5 5",
                    "height width": "10 10", "url": f"{base}/1.jpg"})  # one image < min_images_per_identity
    pd.DataFrame(records).to_csv(tmp_path / "imdb.csv", index=False)
    first = records[0]
    (tmp_path / "labels.csv").write_text(f"identity,gender\n{first['name'].lower().replace(' ', '_')}_{first['index']},female\n")
    shutil.copyfile(tmp_path / "imdb.csv", served / "imdb.csv")  # data.imdb_csv may be a URL
    params = _params(tmp_path, source="imdb_face", imdb_csv=f"{base}/imdb.csv",
                     labels_csv=str(tmp_path / "labels.csv"), retries=0)
    result = collect_faces(params, tmp_path / "faces", root=tmp_path, progress=False)
    # the lonely person is a counted discard, not silently left out
    assert result.summary["discarded_by_reason"] == {"bad_annotation": 1, "dead_link": 1, "too_few_images": 1}
    assert "lonely_person_nm9" not in set(result.index.identity)
    assert len(result.index) == len(records) - 3 and set(result.index.source) == {"imdb_face"}
    assert set(result.index.gender[result.index.identity == result.index.identity.iloc[0]]) == {"female"}
    assert set(result.index.gender[result.index.identity != result.index.identity.iloc[0]]) == {"unknown"}
    found = 0
    for row in result.index.itertuples():
        crop = cv2.imread(str(tmp_path / row.path), cv2.IMREAD_COLOR)
        original = cv2.imread(str(served / Path(row.path).name), cv2.IMREAD_COLOR)
        assert crop.shape[0] <= original.shape[0] and crop.shape[1] <= original.shape[1] and crop.size < original.size
        found += len(_detect(detector, crop)) == 1
    assert found == len(result.index)  # the margin keeps the whole face findable for alignment
    # resume: a second run fetches nothing
    assert collect_faces(params, tmp_path / "faces", root=tmp_path, progress=False).reused == len(result.index)


def test_imdb_face_csv_without_required_columns_is_one_line_error(tmp_path):
    (tmp_path / "imdb.csv").write_text("name,url\nA,http://127.0.0.1:9/a.jpg\n")
    with pytest.raises(LeamError, match="lacks column"):
        collect_faces(_params(tmp_path, source="imdb_face", imdb_csv=str(tmp_path / "imdb.csv")),
                      tmp_path / "faces", progress=False)
    with pytest.raises(LeamError, match="data.imdb_csv is empty"):
        collect_faces(_params(tmp_path, source="imdb_face"), tmp_path / "faces", progress=False)


# ----------------------------------------------------------------------------------- folder

def test_folder_source_with_labels(tmp_path, small_slice):
    root = tmp_path / "people"
    picked = small_slice.groupby("identity").head(2).head(6)
    for row in picked.itertuples():
        folder = root / row.identity.replace("_", " ").title()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.abspath, folder / Path(row.file).name)
    (root / picked.identity.iloc[0].replace("_", " ").title() / "notes.txt").write_text("not an image")
    (root / "labels.csv").write_text(f"identity,gender\n{picked.identity.iloc[0]},{picked.gender.iloc[0]}\n")
    result = collect_faces(_params(tmp_path, source="folder", folder_root=str(root)), tmp_path / "faces",
                           root=tmp_path, progress=False)
    assert sorted(result.index.image_id) == sorted(f"{r.identity}/{Path(r.file).stem}" for r in picked.itertuples())
    assert set(result.index.source) == {"folder"}
    gender = dict(zip(result.index.identity, result.index.gender))
    assert gender[picked.identity.iloc[0]] == picked.gender.iloc[0]
    assert {g for i, g in gender.items() if i != picked.identity.iloc[0]} == {"unknown"}
    original_sha = {f"{r.identity}/{Path(r.file).stem}": _sha(Path(r.abspath)) for r in picked.itertuples()}
    for row in result.index.itertuples():
        assert _sha(tmp_path / row.path) == row.sha256 == original_sha[row.image_id]
    (root / "labels.csv").write_text("identity,gender\nx,robot\n")
    with pytest.raises(LeamError, match="robot"):
        collect_faces(_params(tmp_path, source="folder", folder_root=str(root)), tmp_path / "f2", progress=False)
