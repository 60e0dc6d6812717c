"""Atomic outputs, params lookup and downloads (generated files only)."""

import os

import numpy as np
import pytest

from leam.errors import LeamError
from leam.io import (
    atomic_path,
    download_to,
    load_params,
    param,
    save_npy_atomic,
    sha256_file,
    write_csv_atomic,
    write_csv_parts_atomic,
    write_json_atomic,
)


def test_atomic_path_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_csv_written_in_parts_is_the_csv_of_the_whole_and_nothing_when_a_part_fails(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"model": ["a", "a", "b"], "share": [0.1, 1 / 3, np.nan], "n": [1, 2, 3]})
    write_csv_atomic(tmp_path / "whole.csv", frame)
    assert write_csv_parts_atomic(tmp_path / "parts.csv", (g for _, g in frame.groupby("model"))) == 3
    assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()

    def parts():
        yield frame
        yield frame.rename(columns={"n": "count"})

    with pytest.raises(LeamError, match="columns"):
        write_csv_parts_atomic(tmp_path / "bad.csv", parts())
    assert not (tmp_path / "bad.csv").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["parts.csv", "whole.csv"]


def test_atomic_outputs_have_normal_permissions_and_content(tmp_path):
    save_npy_atomic(tmp_path / "a.npy", np.arange(3))
    write_json_atomic(tmp_path / "m.json", {"x": np.float32(0.5)})
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    assert (tmp_path / "m.json").read_text().strip() == '{\n  "x": 0.5\n}'
    assert oct(os.stat(tmp_path / "a.npy").st_mode & 0o777) != oct(0o600)


def test_params_lookup_and_errors(tmp_path):
    (tmp_path / "params.yaml").write_text("leam:\n  batch_size: 4\n")
    params = load_params(tmp_path / "params.yaml")
    assert param(params, "leam.batch_size") == 4 and param(params, "leam.nope", 7) == 7
    with pytest.raises(LeamError, match="missing parameter 'leam.nope'"):
        param(params, "leam.nope")
    (tmp_path / "bad.yaml").write_text("leam: [\n")
    with pytest.raises(LeamError, match="cannot parse"):
        load_params(tmp_path / "bad.yaml")
    with pytest.raises(LeamError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_download_to_copies_a_url_and_names_failures(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    target = download_to(source.as_uri(), tmp_path / "cache" / "w.bin", "test weights")
    assert sha256_file(target) == sha256_file(source)
    with pytest.raises(LeamError, match="cannot download test weights from"):
        download_to((tmp_path / "absent.bin").as_uri(), tmp_path / "cache" / "x.bin", "test weights")
    assert not (tmp_path / "cache" / "x.bin").exists()


# ----------------------------------------------------------------------------------- corrupt stage outputs
# Each unusable input is one LeamError line that names the file and says how to get a good copy back.

import json  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from leam.io import load_npy, read_aligned, read_csv_checked, read_json_checked, read_leam_outputs  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def _truncated_npy(path: Path, keep: float | int = 0.5) -> Path:
    """A real .npy cut after ``keep`` (a fraction of the file, or a byte count)."""
    np.save(path, np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    return path


NPY_CORPUS = {
    "truncated_data": lambda p: _truncated_npy(p, 0.6),
    "truncated_header": lambda p: _truncated_npy(p, 20),
    "empty": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not an array\n"),
    "pickle": lambda p: p.write_bytes(pickle.dumps({"not": "an array"})),
    "object_array": lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
    "npz": lambda p: p.write_bytes(_npz_bytes(p)),
}


def _npz_bytes(path: Path) -> bytes:
    np.savez(path.with_suffix(".tmp.npz"), a=np.arange(3))
    return path.with_suffix(".tmp.npz").read_bytes()


def _assert_one_line(info, path: Path, *needles: str) -> None:
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert "dvc checkout" in message and "dvc repro" in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize("mmap_mode", [None, "r"])
@pytest.mark.parametrize("kind", sorted(NPY_CORPUS))
def test_corrupt_npy_is_one_line_error(tmp_path, kind, mmap_mode):
    path = tmp_path / "maps.npy"
    NPY_CORPUS[kind](path)
    with pytest.raises(LeamError) as info:
        load_npy(path, mmap_mode=mmap_mode, stage="leam@m")
    _assert_one_line(info, path, "`dvc repro leam@m`")


CSV_CORPUS = {
    "empty": ("", "is empty"),
    "blank_line": ("\n", "is empty"),
    "header_only": ("image_id,identity,row\n", "header but no rows"),
    "missing_column": ("image_id,row\na/1,0\n", "lacks column(s) identity"),
    "unterminated_quote": ('image_id,identity,row\n"a/1,a,0\n', "cannot be read as CSV"),
    "not_utf8": (b"image_id,identity,row\n\xff\xfe,\xff,0\n", "cannot be read as CSV"),
}


@pytest.mark.parametrize("kind", sorted(CSV_CORPUS))
def test_corrupt_csv_is_one_line_error(tmp_path, kind):
    content, needle = CSV_CORPUS[kind]
    path = tmp_path / "index.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LeamError) as info:
        read_csv_checked(path, ("image_id", "identity"), stage="align")
    _assert_one_line(info, path, needle)


def test_header_only_csv_is_fine_where_allowed(tmp_path):
    path = tmp_path / "discards.csv"
    path.write_text("image_id,path,reason\n")
    assert read_csv_checked(path, ("image_id", "reason"), allow_empty=True).empty
    with pytest.raises(LeamError, match="is missing"):
        read_csv_checked(tmp_path / "absent.csv")


JSON_CORPUS = {
    "empty": ("", "is empty"),
    "truncated": ('{"model": "m", "layers": ["a", ', "is not valid JSON"),
    "not_json": ("layers: [a]\n", "is not valid JSON"),
    "not_utf8": (b'{"layers": ["\xff"]}', "is not valid JSON"),
    "list": ('["a", "overall"]', "must hold a JSON object"),
    "missing_key": ('{"model": "m"}', "lacks key(s) layers"),
}


@pytest.mark.parametrize("kind", sorted(JSON_CORPUS))
def test_corrupt_json_is_one_line_error(tmp_path, kind):
    content, needle = JSON_CORPUS[kind]
    path = tmp_path / "layers.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LeamError) as info:
        read_json_checked(path, ("layers",), stage="leam@m")
    _assert_one_line(info, path, needle)


def _leam_outputs(folder: Path, n: int = 3, layers=("stem", "overall")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "maps.npy", np.ones((n, len(layers), 4, 4), dtype=np.float16))
    (folder / "layers.json").write_text(json.dumps({"model": folder.name, "layers": list(layers), "grid": 4}))
    pd.DataFrame({"row": range(n), "image_id": [f"p/{i}" for i in range(n)], "identity": "p",
                  "gender": "male"}).to_csv(folder / "meta.csv", index=False)
    return folder


@pytest.mark.parametrize("damage, file, needle", [
    (lambda d: _truncated_npy(d / "maps.npy"), "maps.npy", "truncated"),
    (lambda d: (d / "layers.json").write_text('{"model": "m", "lay'), "layers.json", "not valid JSON"),
    (lambda d: (d / "layers.json").write_text('{"model": "m"}'), "layers.json", "lacks key(s) layers"),
    (lambda d: (d / "layers.json").write_text('{"layers": "overall"}'), "layers.json", "list of layer names"),
    (lambda d: (d / "meta.csv").write_text("row,image_id,identity\n0,p/0,p\n"), "meta.csv", "lacks column(s) gender"),
    (lambda d: (d / "meta.csv").write_text("row,image_id,identity,gender\n"), "meta.csv", "header but no rows"),
    (lambda d: (d / "meta.csv").write_text(""), "meta.csv", "is empty"),
])
def test_read_leam_outputs_names_the_bad_file(tmp_path, damage, file, needle):
    folder = _leam_outputs(tmp_path / "leam" / "m")
    assert read_leam_outputs(tmp_path / "leam", "m")[0].shape == (3, 2, 4, 4)  # intact, it reads
    damage(folder)
    with pytest.raises(LeamError) as info:
        read_leam_outputs(tmp_path / "leam", "m")
    _assert_one_line(info, folder / file, needle, "`dvc repro leam@m`")


@pytest.mark.parametrize("damage, file", [
    (lambda d: _truncated_npy(d / "frames.npy"), "frames.npy"),
    (lambda d: _truncated_npy(d / "landmarks.npy", 30), "landmarks.npy"),
    (lambda d: (d / "index.csv").write_text("row,image_id,identity\n"), "index.csv"),
    (lambda d: (d / "index.csv").write_text(""), "index.csv"),
])
def test_read_aligned_names_the_bad_file(tmp_path, damage, file):
    folder = tmp_path / "aligned"
    folder.mkdir()
    np.save(folder / "frames.npy", np.zeros((2, 8, 8, 3), dtype=np.uint8))
    np.save(folder / "landmarks.npy", np.zeros((2, 68, 2), dtype=np.float32))
    pd.DataFrame({"row": [0, 1], "image_id": ["p/0", "p/1"], "identity": "p"}).to_csv(folder / "index.csv", index=False)
    assert len(read_aligned(folder)[0]) == 2
    damage(folder)
    with pytest.raises(LeamError) as info:
        read_aligned(folder)
    _assert_one_line(info, folder / file, "`dvc repro align`")


def test_stage_with_a_truncated_maps_file_exits_with_one_line(tmp_path):
    """A real stage process: non-zero exit, one line on stderr naming the file, no traceback."""
    parsing = tmp_path / "data" / "parsing"
    parsing.mkdir(parents=True)
    np.save(parsing / "labels.npy", np.zeros((3, 8, 8), dtype=np.uint8))
    pd.DataFrame({"image_id": [f"p/{i}" for i in range(3)], "row": range(3), "parsed": 1}).to_csv(
        parsing / "index.csv", index=False)
    (parsing / "classes.json").write_text(json.dumps({"backend": "landmarks", "available": ["nose"]}))
    _truncated_npy(_leam_outputs(tmp_path / "data" / "leam" / "dlib_resnet") / "maps.npy")
    (tmp_path / "params.yaml").write_text("seed: 0\nmodels: [dlib_resnet]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "stages.correlate", "--no-progress"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "data/leam/dlib_resnet/maps.npy" in lines[0] and "dvc checkout" in lines[0] and "dvc repro" in lines[0]
    assert not (tmp_path / "metrics").exists()
