"""Stage `leam`: outputs follow docs/ARCHITECTURE.md on real aligned faces; bad input is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from leam import core, embedding
from leam.models.registry import get_spec
from stages import leam as stage
from tests.test_core import FRAME_PADDING

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, aligned_small) -> Path:
    """A repository-like folder: params.yaml (small grid) and data/aligned/ written from ``aligned_small``.

    Four identities: three with two photos each, one with a single photo (which must be dropped).
    """
    result, rows = aligned_small
    rows = rows.assign(array_row=np.arange(len(rows)))
    identities = sorted(rows.identity.unique())[:4]
    rows = rows[rows.identity.isin(identities)]
    rows = pd.concat([rows[rows.identity != identities[-1]].groupby("identity").head(2),
                      rows[rows.identity == identities[-1]].head(1)]).sort_values(["identity", "file"])
    root = tmp_path_factory.mktemp("repo")
    aligned = root / "data" / "aligned"
    aligned.mkdir(parents=True)
    np.save(aligned / "frames.npy", result.frames[rows.array_row])
    np.save(aligned / "landmarks.npy", result.landmarks[rows.array_row])
    index = pd.DataFrame({"image_id": [f"{i}/{Path(f).stem}" for i, f in zip(rows.identity, rows.file)],
                          "identity": rows.identity.to_numpy(), "gender": rows.gender.to_numpy(),
                          "path": rows.file.to_numpy(), "sha256": rows.sha256.to_numpy(), "source": "sample",
                          "row": np.arange(len(rows))})
    index.to_csv(aligned / "index.csv", index=False)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["leam"].update(store_size=56, batch_size=3)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def embedded(workdir, weights_dir) -> Path:
    """``workdir`` with data/embeddings/dlib_resnet.npy, as the models stage writes it (row i = frame i)."""
    spec = get_spec("dlib_resnet")
    frames = np.load(workdir / "data" / "aligned" / "frames.npy")
    landmarks = np.load(workdir / "data" / "aligned" / "landmarks.npy")
    (workdir / "data" / "embeddings").mkdir(exist_ok=True)
    np.save(workdir / "data" / "embeddings" / "dlib_resnet.npy",
            embedding.embed_frames(spec.load(weights_dir), spec, frames, landmarks, FRAME_PADDING).numpy())
    return workdir


def params_placement(workdir: Path) -> str:
    return yaml.safe_load((workdir / "params.yaml").read_text())["leam"]["placement"]


def run(workdir: Path, weights: Path, *extra: str) -> int:
    return stage.run_stage("leam", stage.main, stage.build_parser(),
                           ["--params", str(workdir / "params.yaml"), "--aligned", str(workdir / "data/aligned"),
                            "--weights", str(weights), "--embeddings", str(workdir / "data/embeddings"),
                            "--out", str(workdir / "data/leam"), *extra])


def test_stage_writes_the_documented_outputs(embedded, weights_dir):  # noqa: F811
    workdir = embedded
    assert run(workdir, weights_dir, "--model", "dlib_resnet") == 0
    out = workdir / "data" / "leam" / "dlib_resnet"
    maps = np.load(out / "maps.npy")
    info = json.loads((out / "layers.json").read_text())
    meta = pd.read_csv(out / "meta.csv")
    index = pd.read_csv(workdir / "data" / "aligned" / "index.csv")
    spec = get_spec("dlib_resnet")

    assert list(info) == ["model", "layers", "grid", "frame_size", "sign", "negative_activations", "reference",
                          "placement", "cells", "images_in", "dropped", "scale", "scale_note"]
    assert info["placement"] == params_placement(workdir)
    scale = np.asarray(info["scale"], dtype=np.float32)
    assert scale.shape == (len(info["layers"]),) and (scale > 0).all()
    assert np.allclose(maps.reshape(6, len(info["layers"]), -1).max(axis=(0, 2)), 1.0)  # each layer's peak is 1
    raw = maps.astype(np.float32) * scale[None, :, None, None]
    assert info["layers"] == [*spec.layers, "overall"] and info["grid"] == 56 and info["frame_size"] == 224
    assert list(meta.columns) == ["row", "image_id", "identity", "gender", "reference_image_id", "cosine"]
    assert len(meta) == 6 and len(index) == 7  # the single-photo identity is dropped
    dropped = pd.read_csv(out / "discards.csv")  # ... and listed, so meta + discards = the aligned index
    assert list(dropped.reason) == ["single_image_identity"] and info["dropped"] == {"single_image_identity": 1}
    assert sorted([*meta.image_id, *dropped.image_id]) == sorted(index.image_id) and info["images_in"] == 7
    assert list(meta.image_id) == [i for i in index.image_id if i in set(meta.image_id)]  # index order kept
    assert maps.dtype == np.float16 and maps.shape == (6, len(spec.layers) + 1, 56, 56)
    assert np.isfinite(maps).all() and (maps >= 0).all()
    assert (maps.reshape(6, len(info["layers"]), -1).max(axis=2) > 0).all()  # no layer map is empty
    assert raw[:, -1].max() <= 1.0 + 1e-3  # overall = mean of max-normalised layer maps
    assert (meta.cosine > 0.5).all()  # same-person pairs match
    # baseline_index 0: the first photo is every identity's reference; the baseline itself uses the second
    assert (meta.reference_image_id.iloc[1::2].to_numpy() == meta.image_id.iloc[0::2].to_numpy()).all()
    assert (meta.reference_image_id.iloc[0::2].to_numpy() == meta.image_id.iloc[1::2].to_numpy()).all()

    # The stored maps are the core's maps, area-downsampled from the frame (one image re-done by hand).
    frames = np.load(workdir / "data" / "aligned" / "frames.npy")
    landmarks = np.load(workdir / "data" / "aligned" / "landmarks.npy")
    model = spec.load(weights_dir)
    reference_row = int(index.index[index.image_id == meta.reference_image_id[0]][0])
    reference = embedding.embed_frames(model, spec, frames[[reference_row]], landmarks[[reference_row]], FRAME_PADDING)
    probe = index.row.to_numpy()[:yaml.safe_load((workdir / "params.yaml").read_text())["leam"]["probe_images"]]
    geometries = core.frame_geometries(model, spec, spec.layers, info["placement"], frames[probe], landmarks[probe],
                                       FRAME_PADDING)
    again = core.frame_leam_maps(model, spec, frames[[0]], landmarks[[0]], reference, spec.layers, FRAME_PADDING,
                                 placement=geometries)
    if geometries is not None:  # layers.json records where every layer's cells were placed
        assert info["cells"]["stem"]["centre_0"] == [round(geometries["stem"].y.centre(0), 4),
                                                     round(geometries["stem"].x.centre(0), 4)]
    expected = core.area_downsample(again.maps, 56)[0].numpy()
    assert np.allclose(raw[0, :-1], expected, rtol=2e-3, atol=1e-3 * expected.max())
    assert abs(meta.cosine[0] - float(again.cosine[0])) < 1e-5


def test_stage_errors_are_one_line(embedded, weights_dir, tmp_path, capsys):  # noqa: F811
    workdir = embedded
    assert run(workdir, weights_dir, "--model", "nope") == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["leam"]["layers"] = {"dlib_resnet": ["stem", "layer9.0"]}
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    code = stage.run_stage("leam", stage.main, stage.build_parser(),
                           ["--params", str(bad), "--aligned", str(workdir / "data/aligned"), "--weights",
                            str(weights_dir), "--embeddings", str(workdir / "data/embeddings"),
                            "--out", str(tmp_path / "out"), "--model", "dlib_resnet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "layer9.0" in err[0] and err[0].startswith("error:")
    assert run(workdir, weights_dir, "--model", "dlib_resnet", "--aligned", str(tmp_path / "missing")) == 2
    assert "missing aligned data" in capsys.readouterr().err
    # the models stage's embeddings: missing, or not one row per aligned frame
    assert run(workdir, weights_dir, "--model", "dlib_resnet", "--embeddings", str(tmp_path / "none")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dlib_resnet.npy is missing" in err[0] and "`dvc repro models`" in err[0]
    stale = tmp_path / "stale"
    stale.mkdir()
    np.save(stale / "dlib_resnet.npy", np.load(workdir / "data" / "embeddings" / "dlib_resnet.npy")[:5])
    assert run(workdir, weights_dir, "--model", "dlib_resnet", "--embeddings", str(stale)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(5, 128) do not fit 7 frames" in err[0] and "`dvc repro models`" in err[0]
    assert not (tmp_path / "out").exists()
