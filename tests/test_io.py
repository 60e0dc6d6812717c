"""Atomic outputs, params lookup and downloads (generated files only)."""

import os

import numpy as np
import pytest

from leam.errors import LeamError
from leam.io import (atomic_path, download_to, load_params, param, save_npy_atomic, sha256_file,
                     write_json_atomic)


def test_atomic_path_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []


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
