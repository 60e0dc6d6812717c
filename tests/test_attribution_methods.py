"""Attribution methods against independent naive implementations: one layer per pass, autograd on the input.

A small seeded CNN (with an in-place op after a captured layer) on synthetic frames checks every method
to 1e-5 of its peak under both placements (centred and traced receptive fields); dlib's network on real
aligned faces checks LEAM against ``leam.core.frame_leam_maps``, Grad-CAM against a per-layer loop and
the input-gradient methods against ``torch.autograd.grad``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leam import core
from leam.attribution import METHODS, SIGNED, build_methods, method_sign, occlusion_sensitivity, patch_corners
from leam.attribution.methods import Method, register_method
from leam.config import EXPLAIN_METHODS
from leam.embedding import to_model_input
from leam.errors import LeamError
from leam.frame import input_to_frame
from leam.models.registry import get_spec
from leam.occlusion.fills import fill_values
from leam.occlusion.masks import random_blob_scores, random_scores
from leam.placement import cached_geometries, place_on_input
from tests.attribution_nets import LAYERS, PADDING, SmallNet, small_spec, smooth_frames, source_batch

TOLERANCE = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to TOLERANCE of the expected map's peak (maps of different networks differ by orders of magnitude)."""
    assert actual.shape == expected.shape
    peak = float(expected.abs().max())
    assert peak > 0, "degenerate test: the expected map is all zero"
    assert float((actual - expected).abs().max()) <= TOLERANCE * peak


# --- naive references ---------------------------------------------------------------------------------------

def naive_layer(model, inputs, references, layer):
    """One layer's output and ds/dA from its own forward and backward pass (a hook on that layer alone)."""
    store = {}

    def hook(_module, _inputs, output):
        store["a"] = output
        return output.clone()  # the net may change its output in place later

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = inputs.clone().requires_grad_(True)
            score = F.cosine_similarity(model(x), references, dim=1).sum()
            (gradient,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    return store["a"].detach(), gradient


def naive_input_gradient(model, inputs, references):
    with torch.enable_grad():
        x = inputs.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cosine_similarity(model(x), references, dim=1).sum(), x)
    return gradient


def to_frame(layer_map, geometry, matrices, size, input_size):
    placed = (place_on_input(layer_map, geometry) if geometry is not None else
              F.interpolate(layer_map[:, None], size=(input_size, input_size), mode="bilinear", align_corners=False)[:, 0])
    return input_to_frame(placed[:, None], matrices, size)[:, 0].clamp_min(0)


def naive_maps(model, spec, frames, landmarks, references, layers, geometries, kind, sign=1.0):
    """(N, L, S, S) frame maps of LEAM (``leam``, keep activations) or Grad-CAM (``gradcam``), layer by layer."""
    inputs, matrices = to_model_input(spec, frames, landmarks, PADDING)
    out = []
    for layer in layers:
        a, g = naive_layer(model, inputs, references, layer)
        if kind == "leam":
            cam = torch.relu((torch.relu(sign * g) * a).sum(dim=1))
        else:
            cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
        out.append(to_frame(cam, None if geometries is None else geometries[layer], matrices, frames.shape[1],
                            spec.input_size))
    return torch.stack(out, dim=1)


def peak_normalised(maps):
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak, torch.zeros_like(maps))


# --- the small seeded CNN -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    spec, model = small_spec(), SmallNet(0)
    frames = smooth_frames(4, seed=1)
    inputs, _ = to_model_input(spec, frames, np.zeros((4, 68, 2)), PADDING)
    with torch.no_grad():
        references = F.normalize(model(inputs.roll(1, dims=0)), dim=1)
    return spec, model, frames, references


@pytest.mark.parametrize("placement", ["centred", "receptive_field"])
def test_gradient_methods_equal_naive_on_small_cnn(small, placement):
    spec, model, frames, references = small
    geometries = cached_geometries(model, LAYERS, spec.input_size, placement)
    batch = source_batch(model, spec, frames, references, geometries)
    maps = {}
    for method in build_methods(list(METHODS)[:7], maps=["overall", *LAYERS]):
        maps.update(method(batch))
    landmarks = batch.landmarks
    for sign, name in ((1.0, "leam"), (-1.0, "leam_opposes")):
        layers = naive_maps(model, spec, frames, landmarks, references, LAYERS, geometries, "leam", sign)
        for i, layer in enumerate(LAYERS):
            close(maps[f"{name}:{layer}"], layers[:, i])
        close(maps[f"{name}:overall"], peak_normalised(layers).mean(dim=1))
        fusion = "layercam_fusion" if sign > 0 else "layercam_fusion_opposes"
        close(maps[fusion], peak_normalised(layers).amax(dim=1))
    gradcam = naive_maps(model, spec, frames, landmarks, references, LAYERS, geometries, "gradcam")
    for i, layer in enumerate(LAYERS):
        close(maps[f"gradcam:{layer}"], gradcam[:, i])
    close(maps["gradcam:overall"], peak_normalised(gradcam).mean(dim=1))
    inputs, matrices = to_model_input(spec, frames, landmarks, PADDING)
    gradient = naive_input_gradient(model, inputs, references)
    size = frames.shape[1]
    close(maps["saliency"], input_to_frame(gradient.abs().amax(dim=1, keepdim=True), matrices, size)[:, 0].clamp_min(0))
    close(maps["gradient_x_input"],
          input_to_frame((gradient * inputs).sum(dim=1, keepdim=True).abs(), matrices, size)[:, 0].clamp_min(0))
    assert all(m.dtype == torch.float32 and m.shape == (4, size, size) for m in maps.values())


def test_leam_equals_core_frame_maps_on_small_cnn(small):
    spec, model, frames, references = small
    batch = source_batch(model, spec, frames, references, None)
    ours = build_methods(["leam"], maps=list(LAYERS))[0](batch)
    expected = core.frame_leam_maps(model, spec, frames, batch.landmarks, references, LAYERS, PADDING,
                                    placement="centred").maps
    for i, layer in enumerate(LAYERS):
        close(ours[f"leam:{layer}"], expected[:, i])


def test_one_forward_backward_serves_every_gradient_method(small, monkeypatch):
    spec, model, frames, references = small
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x: calls.append(1) or original(x))
    batch = source_batch(model, spec, frames, references, None)
    for method in build_methods(["leam", "leam_opposes", "layercam_fusion", "gradcam", "saliency", "gradient_x_input"]):
        method(batch)
    assert len(calls) == 1


def test_occlusion_sensitivity_equals_a_patch_by_patch_loop(small):
    spec, model, frames, references = small
    batch = source_batch(model, spec, frames[:2], references[:2], None, fill="mean", batch_size=7)
    ours = build_methods(["occlusion"], patch=24, stride=20)[0](batch)["occlusion"]
    x, size = batch.frame_tensor, frames.shape[1]
    region = torch.as_tensor(batch.region[:2])
    fills = fill_values(x, "mean")
    expected = torch.zeros((2, size, size))
    for i in range(2):
        clean = F.cosine_similarity(batch.target.embed(x[i:i + 1], np.array([i])), references[i:i + 1])
        total, count = torch.zeros(size, size), torch.zeros(size, size)
        for y, x0 in patch_corners(size, 24, 20):
            if not region[i, y:y + 24, x0:x0 + 24].any():
                continue
            changed = x[i:i + 1].clone()
            changed[..., y:y + 24, x0:x0 + 24] = fills[i:i + 1, :, y:y + 24, x0:x0 + 24]
            drop = clean - F.cosine_similarity(batch.target.embed(changed, np.array([i])), references[i:i + 1])
            total[y:y + 24, x0:x0 + 24] += drop
            count[y:y + 24, x0:x0 + 24] += 1
        expected[i] = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    # cosine units: the drops are differences of cosines near 1, so float32 batching noise is ~1e-7 absolute
    assert float((ours - expected).abs().max()) <= TOLERANCE and float(expected.abs().max()) > 1e-3
    assert occlusion_sensitivity  # the function behind the method
    corners = patch_corners(96, 24, 20)
    assert corners[:, 1].max() == 96 - 24 and len(corners) == 25  # the last column is flush with the frame


def test_random_methods_are_the_occlusion_baselines(small):
    spec, model, frames, references = small
    batch = source_batch(model, spec, frames, references, None, seed=3)
    maps = {k: v for m in build_methods(["random_face", "random_blob"]) for k, v in m(batch).items()}
    assert torch.equal(maps["random_face"], random_scores(batch.image_ids, 96, 3, "face", 0))
    assert torch.equal(maps["random_blob"], random_blob_scores(batch.image_ids, torch.as_tensor(batch.region), 3, 0))


def test_registry_matches_the_params_schema_and_signs():
    assert tuple(METHODS) == EXPLAIN_METHODS
    assert method_sign("leam:overall") == "supports_match" and method_sign("leam_opposes:stem") == "opposes_match"
    assert method_sign("layercam_fusion_opposes") == "opposes_match" and method_sign("saliency") == "none"
    assert set(SIGNED) | set(SIGNED.values()) <= set(METHODS)
    with pytest.raises(LeamError, match="explain.methods='lime' is not valid; choose one of: leam, "):
        build_methods(["lime"])
    with pytest.raises(LeamError, match="already registered"):
        register_method("leam", Method)


def test_a_new_method_is_one_small_class(small):
    class Brightness(Method):
        name = "brightness_test"

        def __call__(self, batch):
            return {self.name: batch.frame_tensor.mean(dim=1)}

    register_method(Brightness.name, Brightness)
    try:
        spec, model, frames, references = small
        out = build_methods(["brightness_test"], maps=["overall"])[0](source_batch(model, spec, frames, references))
        assert out["brightness_test"].shape == (4, 96, 96)
    finally:
        METHODS.pop(Brightness.name)


# --- dlib's network on real aligned faces -------------------------------------------------------------------

def test_methods_equal_naive_on_real_faces_with_dlib(weights_dir, real_faces):
    spec = get_spec("dlib_resnet")
    model = spec.load(weights_dir)
    frames, landmarks = real_faces["frames"][:3], real_faces["landmarks"][:3]
    inputs, matrices = to_model_input(spec, frames, landmarks, PADDING)
    with torch.no_grad():
        references = F.normalize(model(to_model_input(spec, real_faces["frames"][3:6], real_faces["landmarks"][3:6],
                                                      PADDING)[0]), dim=1)
    layers = spec.layers
    geometries = cached_geometries(model, layers, spec.input_size, "receptive_field")
    batch = source_batch(model, spec, frames, references, geometries, landmarks=landmarks)
    maps = {k: v for m in build_methods(["leam", "gradcam", "saliency", "gradient_x_input"], maps=["overall", *layers])
            for k, v in m(batch).items()}
    expected = core.frame_leam_maps(model, spec, frames, landmarks, references, layers, PADDING, placement=geometries)
    for i, layer in enumerate(layers):
        close(maps[f"leam:{layer}"], expected.maps[:, i])
    close(maps["leam:overall"], core.overall_map(expected.maps))
    for i, layer in enumerate(layers[:4]):  # a per-layer loop over every layer costs 9 passes; the first four
        gradcam = naive_maps(model, spec, frames, landmarks, references, [layer], geometries, "gradcam")[:, 0]
        close(maps[f"gradcam:{layer}"], gradcam)
    gradient = naive_input_gradient(model, inputs, references)
    size = frames.shape[1]
    close(maps["saliency"], input_to_frame(gradient.abs().amax(dim=1, keepdim=True), matrices, size)[:, 0].clamp_min(0))
    close(maps["gradient_x_input"],
          input_to_frame((gradient * inputs).sum(dim=1, keepdim=True).abs(), matrices, size)[:, 0].clamp_min(0))
