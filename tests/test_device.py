"""leam.device: device and batch-size params, and maps that do not depend on the batch size (real faces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from leam import device as dev
from leam.config import LeamParams
from leam.dataset_maps import dataset_maps
from leam.embedding import embed_frames
from leam.errors import LeamError
from tests.conftest import REPO_ROOT
from tests.test_core import FRAME_PADDING, load_registered
from tests.test_dataset_maps import aligned


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolve_device(no_cuda):
    assert dev.resolve_device("auto") == torch.device("cpu") and dev.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(LeamError, match=r"^leam.device='gpu' is not valid; choose one of: auto, cpu, cuda$"):
        dev.resolve_device("gpu", "leam.device")


def _stage_params(tmp_path, group: str) -> str:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params[group]["device"] = "cuda"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@pytest.mark.parametrize("stage, group", [("models", "verification"), ("leam", "leam"), ("symmetry", "symmetry"),
                                          ("occlusion", "occlusion"), ("explain", "explain")])
def test_cuda_without_a_gpu_is_one_line_naming_the_stage_param(stage, group, tmp_path, no_cuda, monkeypatch):
    """Each stage stops before reading any data (the inputs here do not exist) with the param in the line."""
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    monkeypatch.chdir(tmp_path)
    args = module.build_parser().parse_args(["--params", _stage_params(tmp_path, group),
                                             *(["--model", "dlib_resnet"] if stage == "leam" else [])])
    with pytest.raises(LeamError, match=rf"^{group}.device=cuda but no CUDA device is visible; use auto or cpu$"):
        module.main(args)


def test_parse_farl_cuda_without_a_gpu(no_cuda, tmp_path):
    from leam.parsing import parse_frames

    with pytest.raises(LeamError, match=r"^parsing.device=cuda but no CUDA device is visible"):
        parse_frames("farl", np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 68, 2)),
                     {"device": "cuda", "batch_size": 1}, cache_dir=tmp_path)


def test_batch_size(monkeypatch):
    assert dev.resolve_batch_size(7, "cpu", 1) == 7
    assert dev.resolve_batch_size("auto", "cpu", lambda: pytest.fail("not needed on the CPU")) == dev.CPU_AUTO_BATCH
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000, 20_000))
    assert dev.resolve_batch_size("auto", "cuda", 100) == int(dev.AUTO_MEMORY_FRACTION * 10_000) // 100
    assert dev.resolve_batch_size("auto", "cuda", 10**9) == 1
    assert dev.resolve_batch_size("auto", "cuda", lambda: 1) == dev.AUTO_MAX_BATCH
    for bad in (0, True, "big"):
        with pytest.raises(LeamError, match=rf"^leam.batch_size={bad!r} is not valid; choose a positive integer or auto"):
            dev.resolve_batch_size(bad, "cpu", 1, "leam.batch_size")


def test_forward_bytes_and_padding():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    assert dev.forward_bytes(net, 16) == 4 * (4 * 8 * 8 * 2 + 4 * 8 * 8 + 5)  # conv, relu, flatten, linear outputs
    assert not any(m._forward_hooks for m in net.modules())
    x = torch.arange(6.0).reshape(3, 2)
    (padded,), count = dev.pad_rows((x,), 5)
    assert count == 3 and torch.equal(padded, torch.cat([x, x[2:], x[2:]]))
    assert dev.pad_rows((x,), 2)[0][0] is x
    assert torch.equal(dev.padded_forward(lambda t: t * 2, x), x * 2)
    assert dev.module_device(net) == torch.device("cpu") and dev.module_device(nn.ReLU()) == torch.device("cpu")


def test_maps_and_embeddings_are_bit_identical_across_batch_sizes(real_faces, weights_dir):
    """dlib_resnet on 6 real faces: without the padding, passes of 3 photos differ from one pass of 6 in the
    last bits (MKL's sgemm rounds the final Linear differently below 4 rows; leam.device)."""
    spec, model = load_registered("dlib_resnet", weights_dir)
    index, frames, landmarks = aligned(real_faces)
    one = embed_frames(model, spec, frames, landmarks, FRAME_PADDING, 16)
    assert torch.equal(one, embed_frames(model, spec, frames, landmarks, FRAME_PADDING, 3))
    cfg = LeamParams(store_size=56, placement="receptive_field")
    maps = [dataset_maps(model, spec, spec.layers[-3:], index, frames, landmarks, cfg.model_copy(update={"batch_size": b}),
                         FRAME_PADDING, embeddings=one.numpy()).maps for b in (16, 3)]
    assert maps[0].shape == (6, 4, 56, 56) and maps[0].max() > 0
    assert np.array_equal(maps[0], maps[1])


def test_auto_batch_size_on_the_cpu_runs_the_maps(real_faces, weights_dir):
    spec, model = load_registered("dlib_resnet", weights_dir)
    index, frames, landmarks = aligned(real_faces)
    cfg = LeamParams(store_size=28, probe_images=2, batch_size="auto", placement="receptive_field")
    result = dataset_maps(model, spec, spec.layers[-1:], index, frames, landmarks, cfg, FRAME_PADDING, device="cpu")
    assert result.maps.shape == (6, 2, 28, 28)


def test_batch_size_auto_validates(tmp_path):
    """``batch_size: auto`` validates in every group that has it (the stages resolve it, leam.device)."""
    from leam.config import load_config

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for group in ("verification", "leam", "occlusion", "explain"):
        params[group]["batch_size"] = "auto"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = load_config(path)
    assert (config.verification.batch_size, config.leam.batch_size) == ("auto", "auto")
