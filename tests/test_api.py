"""The public API (leam.api, reached as ``leam.LEAM`` / ``leam.register_model``): the README example runs as
written, and on a real registered model the class gives exactly what ``leam.core.leam_maps`` gives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import leam
from leam import core, embedding
from leam.errors import LeamError
from leam.models import iresnet, registry
from leam.placement import PLACEMENTS, cached_geometries

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAME_PADDING = 0.5  # the analysis frame of the ``real_faces`` fixture (tests/conftest.py)


def readme_example() -> str:
    """The first Python block of the README section "LEAM in your own code"."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## LEAM in your own code$(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md lacks the section '## LEAM in your own code'"
    block = re.search(r"^```python\n(.*?)^```$", section.group(1), re.M | re.S)
    assert block, "the README section has no ```python block"
    return block.group(1)


@pytest.fixture
def clean_registry():
    """Names registered by a test are removed again, so other tests see the built-in models only."""
    before = set(registry._REGISTRY)
    yield
    for name in set(registry._REGISTRY) - before:
        del registry._REGISTRY[name]


def test_readme_example_runs_as_written(clean_registry, capsys):
    code = readme_example()
    assert 5 <= len(code.strip().splitlines()) <= 12
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, core.LeamMaps)
    n, layers = result.maps.shape[:2]
    assert result.maps.shape[2:] == (112, 112) and layers == len(result.layers) and result.cosine.shape == (n,)
    assert bool((result.maps >= 0).all()) and float(result.maps.amax()) > 0
    assert "my_net" in registry.available_models()  # the example's register_model call
    assert str(tuple(result.maps.shape)) in capsys.readouterr().out


def test_import_leam_is_light_and_the_api_is_lazy():
    code = ("import sys, leam; assert 'torch' not in sys.modules, 'import leam imported torch'; "
            "assert 'LEAM' in dir(leam); leam.LEAM; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)
    assert leam.LEAM is leam.api.LEAM and leam.register_model is leam.api.register_model
    for name in leam.__all__:
        assert getattr(leam, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        leam.nope  # noqa: B018


def _same_person_pairs(real_faces: dict) -> tuple[list[int], list[int]]:
    """Rows of ``real_faces`` paired with the other photo of the same identity (3 identities x 2 photos)."""
    identities = real_faces["index"]["identity"].to_numpy()
    rows = list(range(len(identities)))
    partners = [next(j for j in rows if j != i and identities[j] == identities[i]) for i in rows]
    return rows, partners


@pytest.mark.parametrize("options", [
    {},  # the defaults: supports_match, relu, receptive_field
    {"sign": "opposes_match", "negative_activations": "abs", "placement": "centred"},
    {"negative_activations": "keep"},
])
def test_api_equals_core_on_a_real_registered_model(weights_dir, real_faces, options):
    cam = leam.LEAM.from_registry("dlib_resnet", weights_dir, **options)
    spec, model = cam.spec, cam.model
    assert spec is registry.get_spec("dlib_resnet") and cam.layers == spec.layers
    rows, partners = _same_person_pairs(real_faces)
    inputs, _ = embedding.to_model_input(spec, real_faces["frames"], real_faces["landmarks"], FRAME_PADDING)
    references = cam.embed(inputs)[partners]
    result = cam(inputs, references)

    placement = options.get("placement", "receptive_field")
    expected = core.leam_maps(model, inputs, references, spec.layers, options.get("sign", "supports_match"),
                              options.get("negative_activations", "relu"),
                              cached_geometries(model, spec.layers, spec.input_size, placement))
    assert result.layers == expected.layers == spec.layers
    assert result.maps.shape == (len(rows), len(spec.layers), spec.input_size, spec.input_size)
    assert torch.equal(result.maps, expected.maps) and torch.equal(result.cosine, expected.cosine)
    assert float(result.cosine.min()) > 0.5  # real same-person pairs match


def test_api_effective_field_equals_core_with_the_same_probe(weights_dir, real_faces):
    frames, landmarks = real_faces["frames"], real_faces["landmarks"]
    spec = registry.get_spec("dlib_resnet")
    probe, _ = embedding.to_model_input(spec, frames[:4], landmarks[:4], FRAME_PADDING)
    cam = leam.LEAM.from_registry("dlib_resnet", weights_dir, placement="effective_field", probe_images=probe)
    expected_geometries = core.frame_geometries(cam.model, spec, cam.layers, "effective_field", frames[:4],
                                                landmarks[:4], FRAME_PADDING)
    rows, partners = _same_person_pairs(real_faces)
    inputs, _ = embedding.to_model_input(spec, frames, landmarks, FRAME_PADDING)
    references = cam.embed(inputs)[partners]
    result = cam(inputs, references)
    expected = core.leam_maps(cam.model, inputs, references, cam.layers, geometries=expected_geometries)
    assert torch.equal(result.maps, expected.maps) and torch.equal(result.cosine, expected.cosine)


def test_api_layers_subset_and_one_reference_for_all(weights_dir, real_faces):
    cam = leam.LEAM.from_registry("dlib_resnet", weights_dir, layers=["layer2.0", "layer4.2"])
    inputs, _ = embedding.to_model_input(cam.spec, real_faces["frames"][:2], real_faces["landmarks"][:2], FRAME_PADDING)
    reference = cam.embed(inputs[1:2])[0]  # (D,): broadcast to every image
    result = cam(inputs, reference)
    expected = core.leam_maps(cam.model, inputs, reference.expand(2, -1), ("layer2.0", "layer4.2"),
                              geometries=cached_geometries(cam.model, ("layer2.0", "layer4.2"), 150, "receptive_field"))
    assert result.layers == ("layer2.0", "layer4.2") and torch.equal(result.maps, expected.maps)


def test_register_model_makes_a_user_module_a_registered_model(clean_registry, real_faces):
    model = iresnet.build("iresnet18")
    layers = ["prelu", "layer3.1", "layer4.1"]
    spec = leam.register_model("api_test_r18", model, input_size=112, embedding_dim=512, layers=layers)
    assert registry.get_spec("api_test_r18") is spec and spec.layers == tuple(layers)
    assert spec.load(Path("unused")) is model
    frames, landmarks = real_faces["frames"][:2], real_faces["landmarks"][:2]
    references = embedding.embed_frames(model, spec, frames[[1, 0]], landmarks[[1, 0]], FRAME_PADDING)
    framed = core.frame_leam_maps(model, spec, frames, landmarks, references, spec.layers, FRAME_PADDING)
    assert framed.maps.shape == (2, 3, 224, 224)
    # the ArcFace warp: the same 5-point fit as the zoo's IResNet checkpoints
    np.testing.assert_array_equal(spec.input_warp(landmarks, 224, FRAME_PADDING),
                                  iresnet.checkpoint_spec("x", "iresnet18", "p", "0" * 64).input_warp(landmarks, 224, 0.5))
    with pytest.raises(LeamError, match="already registered; pass replace=True"):
        leam.register_model("api_test_r18", model, input_size=112, embedding_dim=512, layers=layers)
    again = leam.register_model("api_test_r18", lambda weights_dir: iresnet.build("iresnet18"), input_size=112,
                                embedding_dim=512, layers=layers, replace=True)
    loaded = again.load(Path("unused"))
    assert registry.get_spec("api_test_r18") is again and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def _one_line(call) -> str:
    with pytest.raises(LeamError) as caught:
        call()
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_bad_arguments_are_one_line_errors_naming_the_choices():
    model = iresnet.build("iresnet18")
    assert "sign='supports' is not valid; choose one of: supports_match, opposes_match" in _one_line(
        lambda: leam.LEAM(model, ["layer4.1"], sign="supports"))
    assert f"placement='center' is not valid; choose one of: {', '.join(PLACEMENTS)}" in _one_line(
        lambda: leam.LEAM(model, ["layer4.1"], placement="center"))
    assert "needs probe_images" in _one_line(lambda: leam.LEAM(model, ["layer4.1"], placement="effective_field"))
    assert "objective='euclidean' is not valid; choose one of: cosine" in _one_line(
        lambda: leam.LEAM(model, ["layer4.1"], objective="euclidean"))
    assert "unknown layer(s) 'layer9'" in _one_line(lambda: leam.LEAM(model, ["layer9"]))
    assert "eval mode" in _one_line(lambda: leam.LEAM(iresnet.IResNet((1, 1, 1, 1)), ["layer4.0"]))
    cam = leam.LEAM(model, "layer4.1")
    assert cam.layers == ("layer4.1",) and "layer4.1" in repr(cam)
    assert "square images" in _one_line(lambda: cam(torch.zeros(1, 3, 112, 96), torch.zeros(1, 512)))
    assert "references are 8-D" in _one_line(lambda: cam(torch.zeros(1, 3, 112, 112), torch.ones(1, 8)))
    assert "embedding_dim=0 is not valid" in _one_line(
        lambda: leam.register_model("x", model, input_size=112, embedding_dim=0, layers=["layer4.1"]))
    assert "unknown layer(s) 'nope'" in _one_line(
        lambda: leam.register_model("x", model, input_size=112, embedding_dim=512, layers=["nope"]))
    assert "choose one of: arcface" in _one_line(
        lambda: leam.register_model("x", model, input_size=112, embedding_dim=512, layers=["prelu"], input_warp="dlib"))
    assert "x" not in registry.available_models()
