"""IResNet family: arcface_torch key layout, checkpoint loading and rejection, params-driven registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leam import geometry
from leam.config import validate_params
from leam.errors import ChecksumError, LeamError
from leam.io import sha256_file
from leam.models import iresnet, registry


@pytest.fixture(scope="module")
def r18_checkpoint(tmp_path_factory) -> tuple[Path, str, iresnet.IResNet]:
    """A random IResNet-18 saved as a plain ``backbone.pth`` state dict, with its sha256."""
    model = iresnet.build("iresnet18")
    path = tmp_path_factory.mktemp("ckpt") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return path, sha256_file(path), model


def test_state_dict_uses_arcface_torch_key_names():
    with torch.device("meta"):  # key names and shapes only, no memory
        keys = set(iresnet.IResNet(iresnet.ARCHS["iresnet50"]).state_dict())
    for key in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.bn1.weight", "layer1.0.conv1.weight",
                "layer1.0.bn2.bias", "layer1.0.prelu.weight", "layer1.0.conv2.weight", "layer1.0.bn3.weight",
                "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean", "layer3.13.bn3.weight",
                "bn2.weight", "fc.weight", "fc.bias", "features.weight", "features.running_mean"):
        assert key in keys, key
    assert "layer3.14.bn1.weight" not in keys and not any(k.startswith("dropout") for k in keys)
    with torch.device("meta"):
        blocks = {arch: len({".".join(k.split(".")[:2]) for k in iresnet.IResNet(depths).state_dict()
                             if k.startswith("layer")}) for arch, depths in iresnet.ARCHS.items()}
    assert blocks == {"iresnet18": 8, "iresnet34": 16, "iresnet50": 24, "iresnet100": 49}


def test_default_layers_cover_every_resolution():
    model = iresnet.build("iresnet18")
    shapes = {}
    for name in iresnet.default_layers("iresnet18"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape[-1]))
    with torch.no_grad():
        embedding = model(torch.full((1, 3, 112, 112), 128.0))
    assert embedding.shape == (1, 512)
    assert sorted(set(shapes.values())) == [7, 14, 28, 56, 112] and len(shapes) == 9


def test_saved_state_dict_loads(r18_checkpoint, tmp_path):
    path, digest, model = r18_checkpoint
    spec = iresnet.checkpoint_spec("user_r18", "iresnet18", str(path), digest)
    loaded = spec.load(tmp_path)
    images = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    # A file:// URL is fetched into the weights folder and cached there.
    url = path.resolve().as_uri()
    fetched = iresnet.checkpoint_spec("url_r18", "iresnet18", url, digest).load(tmp_path)
    assert (tmp_path / "url_r18.pth").is_file()
    assert torch.equal(fetched.fc.weight, model.fc.weight)


def _one_line_error(call, kind=LeamError) -> str:
    with pytest.raises(kind) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_checkpoints_are_rejected(r18_checkpoint, tmp_path):
    path, digest, model = r18_checkpoint
    message = _one_line_error(lambda: iresnet.checkpoint_spec("x", "iresnet34", str(path), digest).load(tmp_path))
    assert "missing key" in message and "layer1.2" in message
    assert "checksum" in _one_line_error(
        lambda: iresnet.checkpoint_spec("x", "iresnet18", str(path), "0" * 64).load(tmp_path), ChecksumError)
    assert "not found" in _one_line_error(
        lambda: iresnet.checkpoint_spec("x", "iresnet18", str(tmp_path / "none.pth"), digest).load(tmp_path))

    state = {key: torch.zeros(1) for key in model.state_dict()}  # right names, wrong shapes: small files
    torch.save({**state, "head.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    extra = tmp_path / "extra.pth"
    assert "unexpected key" in _one_line_error(
        lambda: iresnet.checkpoint_spec("x", "iresnet18", str(extra), sha256_file(extra)).load(tmp_path))
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    assert "size mismatch" in _one_line_error(
        lambda: iresnet.checkpoint_spec("x", "iresnet18", str(wrong), sha256_file(wrong)).load(tmp_path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert "cannot read" in _one_line_error(
        lambda: iresnet.checkpoint_spec("x", "iresnet18", str(garbage), sha256_file(garbage)).load(tmp_path))
    assert "model_zoo.x.arch" in _one_line_error(lambda: iresnet.checkpoint_spec("x", "resnet18", str(path), digest))


def test_model_zoo_params_register_checkpoints(r18_checkpoint, tmp_path):
    path, digest, _ = r18_checkpoint
    params = {"model_zoo": {"zoo_test_r18": {"arch": "iresnet18", "path_or_url": str(path), "sha256": digest}},
              "models": ["zoo_test_r18"]}
    zoo = validate_params(params).model_zoo  # what the stages pass: the validated model_zoo
    try:
        assert registry.register_zoo(zoo) == ["zoo_test_r18"]
        assert registry.register_zoo(params["model_zoo"]) == []  # same entry again (plain mapping): no-op
        assert "zoo_test_r18" in registry.available_models()
        spec = registry.get_spec("zoo_test_r18")
        assert spec.input_size == 112 and spec.layers == iresnet.default_layers("iresnet18")
        model = spec.load(tmp_path)
        assert registry.resolve_layers(spec, model, None) == list(spec.layers)
        changed = {"model_zoo": {"zoo_test_r18": {"arch": "iresnet50", "path_or_url": str(path), "sha256": digest}}}
        assert "already registered" in _one_line_error(lambda: registry.register_zoo(changed["model_zoo"]))
    finally:
        registry._REGISTRY.pop("zoo_test_r18", None)
    assert "zoo_test_r18" not in registry.available_models()
    assert not any(name.startswith("iresnet") for name in registry.available_models())  # bare archs are not offered


def test_input_warp_places_landmarks_on_the_arcface_template():
    rng = np.random.default_rng(0)
    # Template points written into a 68-point layout, then moved by a known similarity (frame = template * 2 + t).
    angle, scale, shift = 0.2, 1.9, np.array([17.0, 30.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = rng.uniform(0, 224, size=(2, 68, 2))
    frame_points = geometry.ARCFACE_TEMPLATE @ rotation.T + shift
    for n in range(2):
        landmarks[n, 36:42] = frame_points[0]
        landmarks[n, 42:48] = frame_points[1]
        landmarks[n, 30], landmarks[n, 48], landmarks[n, 54] = frame_points[2], frame_points[3], frame_points[4]
    matrices = iresnet.arcface_input_warp(landmarks, 224, 0.5)
    assert matrices.shape == (2, 2, 3)
    mapped = geometry.five_points(landmarks) @ np.swapaxes(matrices[:, :, :2], 1, 2) + matrices[:, None, :, 2]
    assert np.abs(mapped - geometry.ARCFACE_TEMPLATE).max() < 1e-9
    assert np.allclose(np.linalg.det(matrices[:, :, :2]), 1 / scale ** 2)
    with pytest.raises(LeamError, match="68, 2"):
        iresnet.arcface_input_warp(landmarks[:, :5], 224, 0.5)
