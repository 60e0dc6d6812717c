"""leam.engine: the local loop, the one-line error without Ray, and `engine: ray` on a local 2-CPU Ray instance.

The Ray test runs the `models` and `leam@mobileface` stages on 8 real aligned faces (3 photo batches, the
last one short, on 2 actors: order kept; no GPU in the cluster: CPU workers for the GPU-capable models stage)
with engine=local and engine=ray and requires byte-identical outputs: embeddings, `metrics/models.json`, the
pairs table and every file of `data/leam/mobileface/`. It skips, saying so, where
Ray is not installed (`pip install -r requirements-ray.txt`; `.ci/run` installs it).
"""

from __future__ import annotations

import builtins
import importlib.util
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from leam import engine
from leam.errors import LeamError
from stages import leam as leam_stage
from stages import models as models_stage
from tests.test_core import load_registered

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install -r requirements-ray.txt)")


class Scaler:
    """A worker factory for the tests: counts how often it is built; multiplies each batch's ``x``."""

    built = 0

    def __init__(self, factor: float, device: torch.device):
        type(self).built += 1
        self.factor, self.device = factor, device

    def __call__(self, batch):
        return {"start": batch["start"], "y": np.asarray(batch["x"]) * self.factor, "device": str(self.device)}


def test_local_engine_builds_the_worker_once_and_keeps_order():
    Scaler.built = 0
    batches = [{"start": i, "x": np.arange(i + 1)} for i in range(4)]
    out = list(engine.map_batches(partial(Scaler, 2.0), iter(batches), 4, "local", progress=False))
    assert Scaler.built == 1 and [o["start"] for o in out] == [0, 1, 2, 3]
    assert all(np.array_equal(o["y"], 2 * np.arange(i + 1)) for i, o in enumerate(out))
    assert {o["device"] for o in out} == {"cpu"}


def test_unknown_engine_and_missing_ray_are_one_line(monkeypatch):
    with pytest.raises(LeamError, match="engine='spark'.*local, ray"):
        list(engine.map_batches(partial(Scaler, 1.0), [], 0, "spark"))
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)  # the engine may set it: undone after
    with pytest.raises(LeamError) as error:
        list(engine.map_batches(partial(Scaler, 1.0), [{"start": 0, "x": np.zeros(1)}], 1, "ray"))
    assert str(error.value) == engine.RAY_MISSING and "\n" not in str(error.value)
    assert "requirements-ray.txt" in engine.RAY_MISSING


def test_actor_rows_round_trip_ragged_batches():
    """BatchActor (run here, without Ray) unpacks rows as the local engine sees batches and packs outputs."""
    actor = engine.BatchActor(partial(Scaler, 3.0), threads=torch.get_num_threads(), gpu=False)
    rows = {"start": np.array([0, 2]), "x": np.array([np.ones(2), np.ones(1)], dtype=object)}
    out = actor(rows)
    assert list(out["start"]) == [0, 2] and out["y"].dtype == object
    assert np.array_equal(out["y"][0], [3.0, 3.0]) and np.array_equal(out["y"][1], [3.0])


# ----------------------------------------------------------------------------------- on a local Ray instance
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module (the engine uses a Ray already initialised).

    It listens on the loopback address only: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when imported
    (a single-node instance, as Ray starts on macOS), else it binds the machine's network address.
    """
    if not HAS_RAY:
        pytest.skip("ray is not installed (pip install -r requirements-ray.txt)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        yield ray
        ray.shutdown()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, aligned_small, weights_dir) -> Path:
    """data/aligned of 4 identities x 2 photos and a params.yaml for mobileface with 3-photo batches."""
    load_registered("mobileface", weights_dir)  # skips, saying why, when its weights cannot be had
    result, rows = aligned_small
    rows = rows.assign(array_row=np.arange(len(rows))).groupby("identity").head(2)
    rows = rows[rows.identity.isin(sorted(rows.identity.unique())[:4])]
    root = tmp_path_factory.mktemp("engine")
    aligned = root / "data" / "aligned"
    aligned.mkdir(parents=True)
    np.save(aligned / "frames.npy", result.frames[rows.array_row])
    np.save(aligned / "landmarks.npy", result.landmarks[rows.array_row])
    pd.DataFrame({"image_id": [f"{i}/{Path(f).stem}" for i, f in zip(rows.identity, rows.file)],
                  "identity": rows.identity.to_numpy(), "gender": rows.gender.to_numpy(),
                  "path": rows.file.to_numpy(), "sha256": rows.sha256.to_numpy(), "source": "sample",
                  "row": np.arange(len(rows))}).to_csv(aligned / "index.csv", index=False)
    assert len(rows) == 8
    return root


def run_stages(root: Path, weights: Path, engine_name: str) -> Path:
    """The models and leam@mobileface stages with ``engine``; returns the folder of their outputs."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params.update(models=["mobileface"], engine=engine_name)
    params["verification"]["batch_size"] = 3
    params["leam"].update(store_size=56, batch_size=3, probe_images=2)
    params["ray"].update(actors=2, cpus_per_actor=1)
    out = root / engine_name
    out.mkdir()
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(out / "params.yaml"), "--aligned", str(root / "data" / "aligned"), "--weights",
              str(weights)]
    assert models_stage.run_stage("models", models_stage.main, models_stage.build_parser(),
                                  [*common, "--embeddings", str(out / "embeddings"), "--metrics",
                                   str(out / "metrics" / "models.json"), "--pairs", str(out / "pairs.csv")]) == 0
    assert leam_stage.run_stage("leam", leam_stage.main, leam_stage.build_parser(),
                                [*common, "--model", "mobileface", "--embeddings", str(out / "embeddings"),
                                 "--out", str(out / "leam")]) == 0
    return out


@needs_ray
def test_ray_engine_outputs_equal_the_local_engine_byte_for_byte(local_ray, workdir, weights_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # = ray.cpus_per_actor: float32 results depend on the thread count
    try:
        local = run_stages(workdir, weights_dir, "local")
        on_ray = run_stages(workdir, weights_dir, "ray")
    finally:
        torch.set_num_threads(threads)
    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file() and p.name != "params.yaml")
    assert {"embeddings/mobileface.npy", "metrics/models.json", "pairs.csv", "leam/mobileface/maps.npy",
            "leam/mobileface/layers.json", "leam/mobileface/meta.csv"} <= {p.as_posix() for p in files}
    assert files == sorted(p.relative_to(on_ray) for p in on_ray.rglob("*") if p.is_file() and p.name != "params.yaml")
    different = [p.as_posix() for p in files if (local / p).read_bytes() != (on_ray / p).read_bytes()]
    assert not different, f"engine=ray changed {different}"
    assert np.load(local / "leam" / "mobileface" / "maps.npy").shape[0] == 8

