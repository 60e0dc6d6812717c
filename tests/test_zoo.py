"""model_zoo entries in each graph format load, choose their layers, list them and produce LEAM maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from leam import core, embedding
from leam.config import validate_params
from leam.errors import ChecksumError, LeamError
from leam.io import sha256_file
from leam.models import npm_models
from leam.models.registry import _REGISTRY, describe_models, get_spec, register_zoo, resolve_layers

FRAME_PADDING = 0.5  # the analysis frame of the ``real_faces`` fixture (tests/conftest.py)


class TinyEmbedder(nn.Module):
    """Seeded IResNet-like stand-in at 112 px: three resolutions, PReLU, a linear 32-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.PReLU(8))
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16 * 14 * 14, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.deep(self.block(self.stem(x))), 1))


def _register(name: str, entry: dict) -> str:
    """Validate ``entry`` as params.yaml would and register it (replacing an earlier test's entry)."""
    config = validate_params({"model_zoo": {name: entry}, "models": [name]})
    _REGISTRY.pop(name, None)
    register_zoo(config.model_zoo)
    return name


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> tuple[Path, TinyEmbedder]:
    torch.manual_seed(0)
    net = TinyEmbedder().eval()
    buffer = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), buffer, dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=13)
    path = tmp_path_factory.mktemp("zoo") / "tiny.onnx"
    path.write_bytes(buffer.getvalue())
    return path, net


def test_onnx_entry_loads_lists_one_layer_per_resolution_and_gives_maps(onnx_file, real_faces, tmp_path):
    path, net = onnx_file
    name = _register("tiny_onnx", {"format": "onnx", "path_or_url": str(path), "sha256": sha256_file(path),
                                   "embedding_dim": 32, "mean": 127.5, "std": 128.0})
    spec = get_spec(name)
    model = spec.load(tmp_path)
    layers = resolve_layers(spec, model, None)
    assert layers == ["res56x56", "res28x28", "res14x14"]  # shallow to deep, one per resolution
    listing = "\n".join(describe_models(tmp_path))
    assert "tiny_onnx" in listing and "res28x28" in listing and "16x28x28" in listing
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        torch.testing.assert_close(model(images), net((images - 127.5) / 128.0), rtol=1e-4, atol=1e-4)
    frames, landmarks = real_faces["frames"][:3], real_faces["landmarks"][:3]
    embeddings = embedding.embed_frames(model, spec, frames, landmarks, FRAME_PADDING)
    result = core.frame_leam_maps(model, spec, frames, landmarks, embeddings.roll(1, 0), layers, FRAME_PADDING,
                                  placement="receptive_field")
    assert result.maps.shape == (3, 3, *frames.shape[1:3])
    assert bool((result.maps.flatten(2).amax(2) > 0).all())


def test_onnx_entry_errors_are_one_line(onnx_file, tmp_path):
    path, _ = onnx_file
    entry = {"format": "onnx", "path_or_url": str(path), "sha256": "0" * 64, "embedding_dim": 32}
    with pytest.raises(ChecksumError) as caught:
        get_spec(_register("bad_sum", entry)).load(tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(LeamError, match=r"output is \(2, 32\).*expected \(2, 64\)"):
        get_spec(_register("bad_dim", {**entry, "sha256": sha256_file(path), "embedding_dim": 64})).load(tmp_path)
    with pytest.raises(LeamError, match="not found"):
        get_spec(_register("no_file", {**entry, "path_or_url": str(tmp_path / "missing.onnx")})).load(tmp_path)
    for bad, message in (({"embedding_dim": None}, "needs embedding_dim"), ({"format": "tfjs"}, "needs output"),
                         ({"std": 0}, "std must not be 0"), ({"format": "arcface_torch"}, "needs arch")):
        with pytest.raises(LeamError, match=message) as caught:
            validate_params({"model_zoo": {"x": {**entry, **bad}}})
        assert "\n" not in str(caught.value)


def test_tflite_and_tfjs_entries_equal_the_built_in_networks_they_name(weights_dir, tmp_path):
    """The shipped expo_mfn (.tflite) and faceres (TF.js) files, brought in as zoo entries with their input
    conventions, compute what the built-in specs compute."""
    cases = {
        "zoo_expo": ("expo_mfn", {"format": "tflite", "path_or_url": str(weights_dir / npm_models.NPM_FILES["expo_mfn"].file),
                                  "embedding_dim": 192, "mean": 127.5, "std": 128.0}),
        "zoo_faceres": ("faceres", {"format": "tfjs", "path_or_url": str(weights_dir / "human" / "faceres.json"),
                                    "embedding_dim": 1024, "input_size": 224, "mean": 0.0, "std": 1.0,
                                    "output": "global_pooling/Mean"}),
    }
    for name, (builtin, entry) in cases.items():
        path = Path(entry["path_or_url"])
        if not path.is_file():
            pytest.skip(f"{builtin} weights unavailable")
        spec = get_spec(_register(name, {**entry, "sha256": sha256_file(path)}))
        model, reference = spec.load(tmp_path), get_spec(builtin).load(weights_dir)
        size = spec.input_size
        images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2)) * 255
        with torch.no_grad():
            ours, theirs = model(images), reference(images)
        assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5, name
        layers = resolve_layers(spec, model, None)
        assert len(layers) >= 3 and all(layer.startswith("res") for layer in layers), layers


def build_tiny_embedder() -> TinyEmbedder:
    """The ``builder`` of the python-format tests (``tests.test_zoo:build_tiny_embedder``): fresh weights."""
    torch.manual_seed(123)
    return TinyEmbedder()


def _real_inputs(aligned_small, spec) -> torch.Tensor:
    """Every aligned face of the test slice (at least 20) warped to the spec's input, RGB 0..255."""
    from leam.frame import frame_to_input

    result, _ = aligned_small
    assert len(result.frames) >= 20
    frames = torch.from_numpy(result.frames).permute(0, 3, 1, 2).float()
    matrices = spec.input_warp(result.landmarks, result.frames.shape[1], FRAME_PADDING)
    return frame_to_input(frames, matrices, spec.input_size)


def test_torchscript_entry_matches_torch_jit_on_real_faces_and_gives_maps(aligned_small, real_faces, tmp_path):
    """Reference runtime: the TorchScript file run by torch.jit, on >= 20 real aligned faces."""
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.trace(TinyEmbedder().eval(), torch.zeros(1, 3, 112, 112)).save(str(path))
    name = _register("tiny_ts", {"format": "torchscript", "path_or_url": str(path), "sha256": sha256_file(path),
                                 "embedding_dim": 32, "mean": [127.5, 127.5, 127.5], "std": 128.0})
    spec = get_spec(name)
    model = spec.load(tmp_path)
    layers = resolve_layers(spec, model, None)
    assert layers == ["res56x56", "res28x28", "res14x14"]
    images = _real_inputs(aligned_small, spec)
    script = torch.jit.load(str(path))
    with torch.no_grad():
        ours, theirs = model(images), script((images - 127.5) / 128.0)
    assert float((ours - theirs).abs().max()) <= 1e-4
    frames, landmarks = real_faces["frames"][:3], real_faces["landmarks"][:3]
    embeddings = embedding.embed_frames(model, spec, frames, landmarks, FRAME_PADDING)
    result = core.frame_leam_maps(model, spec, frames, landmarks, embeddings.roll(1, 0), layers, FRAME_PADDING,
                                  placement="receptive_field")
    assert bool((result.maps.flatten(2).amax(2) > 0).all())
    path.write_bytes(b"not a torchscript file")
    with pytest.raises(LeamError, match="not a readable TorchScript file") as caught:
        get_spec(_register("bad_ts", {"format": "torchscript", "path_or_url": str(path),
                                      "sha256": sha256_file(path), "embedding_dim": 32})).load(tmp_path)
    assert "\n" not in str(caught.value)


def test_python_entry_builds_loads_its_state_dict_and_names_its_own_layers(aligned_small, real_faces, tmp_path):
    torch.manual_seed(7)
    trained = TinyEmbedder().eval()
    state = tmp_path / "tiny_state.pth"
    torch.save(trained.state_dict(), state)
    entry = {"format": "python", "builder": "tests.test_zoo:build_tiny_embedder", "path_or_url": str(state),
             "sha256": sha256_file(state), "embedding_dim": 32, "channel_order": "BGR", "mean": 127.5, "std": 128.0}
    spec = get_spec(_register("tiny_py", entry))
    model = spec.load(tmp_path)
    assert resolve_layers(spec, model, None) == ["stem", "block", "deep"]  # last submodule at each resolution
    images = _real_inputs(aligned_small, spec)
    with torch.no_grad():  # the state dict, not the builder's fresh weights, and BGR order
        torch.testing.assert_close(model(images), trained((images.flip(1) - 127.5) / 128.0), rtol=1e-5, atol=1e-5)
    frames, landmarks = real_faces["frames"][:3], real_faces["landmarks"][:3]
    embeddings = embedding.embed_frames(model, spec, frames, landmarks, FRAME_PADDING)
    result = core.frame_leam_maps(model, spec, frames, landmarks, embeddings.roll(1, 0), ["stem", "deep"],
                                  FRAME_PADDING, placement="receptive_field")
    assert result.maps.shape == (3, 2, *frames.shape[1:3]) and bool((result.maps.flatten(2).amax(2) > 0).all())
    torch.save({"other.weight": torch.zeros(1)}, state)
    for bad, message in (({"builder": "tests.no_such_module:build"}, "cannot be imported"),
                         ({"builder": "tests.test_zoo:FRAME_PADDING"}, "is not a function"),
                         ({"builder": "builtins:dict"}, "not a torch nn.Module"),
                         ({"sha256": sha256_file(state)}, "does not load into the built module")):
        with pytest.raises(LeamError, match=message) as caught:
            get_spec(_register("bad_py", {**entry, **bad})).load(tmp_path)
        assert "\n" not in str(caught.value)
    for bad, message in (({"builder": "no colon"}, "package.module:function"), ({"sha256": ""}, "needs its sha256"),
                         ({"format": "onnx", "path_or_url": ""}, "builder is for format python only")):
        with pytest.raises(LeamError, match=message):
            validate_params({"model_zoo": {"x": {**entry, **bad}}})


def test_frame_alignment_resizes_the_analysis_frame(real_faces):
    spec = get_spec(_register("tiny_frame", {"format": "python", "builder": "tests.test_zoo:build_tiny_embedder",
                                             "embedding_dim": 32, "alignment": "frame"}))
    matrices = spec.input_warp(real_faces["landmarks"], 224, FRAME_PADDING)
    assert matrices.shape == (6, 2, 3)
    np.testing.assert_allclose(matrices[0], [[111 / 223, 0, 0], [0, 111 / 223, 0]])


def test_register_zoo_takes_plain_mappings_of_every_format():
    """The registry accepts unvalidated mappings too (``leam.register_zoo`` from Python), in any format."""
    name = "plain_python"
    _REGISTRY.pop(name, None)
    assert register_zoo({name: {"format": "python", "builder": "tests.test_zoo:build_tiny_embedder",
                                "embedding_dim": 32}}) == [name]
    assert get_spec(name).embedding_dim == 32
    with pytest.raises(LeamError, match="must be a mapping with a format") as caught:
        register_zoo({"bad": {"format": "caffe", "path_or_url": "x"}})
    assert "\n" not in str(caught.value)
