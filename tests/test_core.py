"""LEAM core: the fast all-layer path against an obviously correct one-layer reference, on real faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam import core
from leam.embedding import embed_frames, reference_embeddings, to_model_input
from leam.errors import LeamError
from leam.models import iresnet
from leam.models.registry import available_models, get_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAME_SIZE, FRAME_PADDING = 224, 0.5


def load_registered(name: str, weights_dir: Path):
    """A registered model, or a skip naming why its weights are genuinely unavailable."""
    spec = get_spec(name)
    try:
        return spec, spec.load(weights_dir)
    except LeamError as exc:
        if any(word in str(exc) for word in ("not found", "download", "missing")):
            pytest.skip(f"weights of {name} unavailable: {exc}")
        raise


# --- models for edge cases --------------------------------------------------------------------------------

class TinyNet(nn.Module):
    """3x32x32 -> 8-d; ``conv3``'s output is mutated by an in-place residual add (the hook trap)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.act2(self.conv2(self.act1(self.conv1(x / 255.0))))
        c = self.conv3(b)
        c += b
        return self.fc(F.adaptive_avg_pool2d(c, 2).flatten(1))


@pytest.fixture(scope="module")
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval().requires_grad_(False)


@pytest.fixture(scope="module")
def r18() -> iresnet.IResNet:
    return iresnet.build("iresnet18")


def tiny_batch(n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator) * 255, torch.randn(n, 8, generator=generator)


# --- the obviously correct reference: one image, one layer, explicit formula -------------------------------

def reference_map(model: nn.Module, image: torch.Tensor, reference: torch.Tensor, layer: str,
                  sign: str = "supports_match", negative: str = "keep") -> torch.Tensor:
    """(3, s, s) image, (D,) reference -> (s, s) map via a plain hook and torch.autograd.grad."""
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.__setitem__("A", o))
    x = image[None].clone().requires_grad_(True)
    try:
        embedding = model(x)[0]
    finally:
        handle.remove()
    score = torch.dot(embedding, reference) / (embedding.norm() * reference.norm())
    activation = captured["A"]
    (gradient,) = torch.autograd.grad(score, activation)
    activation, gradient = activation[0].detach(), gradient[0]
    if negative == "relu":
        activation = activation.clamp(min=0)
    elif negative == "abs":
        activation = activation.abs()
    weight = gradient.clamp(min=0) if sign == "supports_match" else (-gradient).clamp(min=0)
    total = torch.zeros_like(activation[0])
    for k in range(activation.shape[0]):
        total = total + weight[k] * activation[k]
    small = total.clamp(min=0)
    return F.interpolate(small[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def assert_close(fast: torch.Tensor, slow: torch.Tensor, tol: float = 1e-5) -> None:
    """Max absolute difference <= tol x the reference map's peak (raw map scales differ by model and layer)."""
    scale = max(float(slow.abs().max()), 1e-20)
    assert float((fast - slow).abs().max()) <= tol * scale, (float((fast - slow).abs().max()), scale)


# --- tests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign", core.SIGNS)
@pytest.mark.parametrize("negative", core.NEGATIVE_ACTIVATIONS)
def test_all_layers_in_one_pass_equal_reference_tiny(tiny, sign, negative):
    images, references = tiny_batch()
    layers = ["conv1", "act1", "conv2", "act2"]  # not conv3: the naive reference hook falls into its trap
    result = core.leam_maps(tiny, images, references, layers, sign=sign, negative_activations=negative)
    assert result.maps.shape == (3, 4, 32, 32)
    for n in range(3):
        for j, layer in enumerate(layers):
            assert_close(result.maps[n, j], reference_map(tiny, images[n], references[n], layer, sign, negative))
    assert result.maps.abs().sum() > 0


def test_cosine_is_the_pair_score(tiny):
    images, references = tiny_batch()
    result = core.leam_maps(tiny, images, references, ["conv2"])
    expected = F.cosine_similarity(tiny(images), references, dim=1)
    assert torch.allclose(result.cosine, expected, atol=1e-6)


def test_inplace_trap_on_iresnet_block(r18, real_faces):
    """A hook that keeps ``bn3``'s output sees ``out += identity``; the clone-returning hook does not."""
    spec = iresnet.checkpoint_spec("trap", "iresnet18", "unused.pth", "0")
    inputs, _ = to_model_input(spec, real_faces["frames"][:1], real_faces["landmarks"][:1], FRAME_PADDING)
    references = torch.randn(1, 512, generator=torch.Generator().manual_seed(3))
    block = r18.layer1[0]

    # Ground truth by hand: run the network with bn3's output as an explicit tensor.
    with torch.enable_grad():
        x = r18.prelu(r18.bn1(r18.conv1((inputs / 255.0 - 0.5) / 0.5)))
        bn3 = block.bn3(block.conv2(block.prelu(block.bn2(block.conv1(block.bn1(x)))))).requires_grad_(True)
        out = bn3 + block.downsample(x)
        for later in list(r18.layer1)[1:]:
            out = later(out)
        out = r18.layer4(r18.layer3(r18.layer2(out)))
        embedding = r18.features(r18.fc(torch.flatten(r18.bn2(out), 1)))
        cosine = F.cosine_similarity(embedding, references, dim=1)
        (gradient,) = torch.autograd.grad(cosine.sum(), bn3)
    truth = F.interpolate(core.layer_map(bn3.detach(), gradient)[:, None], size=112, mode="bilinear",
                          align_corners=False)[:, 0]

    fast = core.leam_maps(r18, inputs, references, ["layer1.0.bn3"]).maps[:, 0]
    assert_close(fast, truth)

    # The naive hook captures a tensor that the block then overwrites with bn3 + identity.
    naive = reference_map(r18, inputs[0], references[0], "layer1.0.bn3")[None]
    block_output = core.leam_maps(r18, inputs, references, ["layer1.0"]).maps[:, 0]
    assert float((naive - truth).abs().max()) > 0.1 * float(truth.abs().max())
    assert_close(naive, block_output)


def test_backprop_stops_at_shallowest_layer(r18):
    calls = []
    handle = r18.conv1.register_full_backward_hook(lambda *args: calls.append(1))
    try:
        images = torch.rand(1, 3, 112, 112) * 255
        result = core.leam_maps(r18, images, torch.randn(1, 512), ["layer2.0", "layer1.1"])
    finally:
        handle.remove()
    assert calls == []
    assert all(p.grad is None for p in r18.parameters())
    assert result.maps.shape == (1, 2, 112, 112) and result.maps.sum() > 0


def test_self_reference_gives_zero_maps(tiny):
    images, _ = tiny_batch(2)
    result = core.leam_maps(tiny, images, tiny(images), ["conv1", "conv3"])
    assert torch.allclose(result.cosine, torch.ones(2), atol=1e-6)
    other = core.leam_maps(tiny, images, tiny(images.flip(0)), ["conv1", "conv3"])
    assert float(result.maps.abs().max()) < 1e-3 * float(other.maps.abs().max())


def test_negative_activation_policies_differ_on_signed_block_outputs(r18):
    images = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(5)) * 255
    references = torch.randn(1, 512, generator=torch.Generator().manual_seed(6))
    maps = {policy: core.leam_maps(r18, images, references, ["layer2.0"], negative_activations=policy).maps
            for policy in core.NEGATIVE_ACTIVATIONS}
    assert torch.all(maps["abs"] >= maps["relu"] - 1e-7)  # |A| >= ReLU(A) with non-negative weights
    assert float((maps["abs"] - maps["relu"]).abs().max()) > 1e-3 * float(maps["abs"].max())
    assert not torch.allclose(maps["keep"], maps["relu"])


def test_batched_pairs_equal_one_at_a_time(weights_dir, real_faces):
    spec, model = load_registered("dlib_resnet", weights_dir)
    frames, landmarks = real_faces["frames"][:3], real_faces["landmarks"][:3]
    embeddings = embed_frames(model, spec, frames, landmarks, FRAME_PADDING)
    references = embeddings.roll(1, dims=0)
    batched = core.frame_leam_maps(model, spec, frames, landmarks, references, spec.layers, FRAME_PADDING)
    assert batched.maps.shape == (3, len(spec.layers), FRAME_SIZE, FRAME_SIZE)
    for n in range(3):
        single = core.frame_leam_maps(model, spec, frames[n:n + 1], landmarks[n:n + 1], references[n:n + 1],
                                      spec.layers, FRAME_PADDING)
        assert_close(single.maps[0], batched.maps[n])
        assert abs(float(single.cosine[0]) - float(batched.cosine[n])) < 1e-5


def test_bad_inputs_are_one_line_errors(tiny):
    images, references = tiny_batch(2)
    cases = [
        (lambda: core.leam_maps(tiny, images, references, ["conv9"]), "unknown layer"),
        (lambda: core.leam_maps(tiny, images, references, []), "no LEAM layers"),
        (lambda: core.leam_maps(tiny, images[:0], references[:0], ["conv1"]), "non-empty"),
        (lambda: core.leam_maps(tiny, images, references[:1], ["conv1"]), "references must be"),
        (lambda: core.leam_maps(tiny, images, torch.randn(2, 5), ["conv1"]), "5-D"),
        (lambda: core.leam_maps(tiny, images, references, ["conv1"], sign="up"), "leam.sign"),
        (lambda: core.leam_maps(tiny, images, references, ["conv1"], negative_activations="x"), "negative"),
        (lambda: core.leam_maps(tiny, images, references, ["fc"]), "(N, C, h, w)"),
        (lambda: core.leam_maps(tiny.train(), images, references, ["conv1"]), "eval mode"),
    ]
    try:
        for call, fragment in cases:
            with pytest.raises(LeamError) as info:
                call()
            message = str(info.value)
            assert fragment in message and "\n" not in message
    finally:
        tiny.eval()


def test_select_references(real_faces):
    index = real_faces["index"][["image_id", "identity"]].copy()
    lonely = pd.DataFrame({"image_id": ["solo/one"], "identity": ["solo"]})
    index = pd.concat([index, lonely], ignore_index=True)
    plan, dropped = core.select_references(index, "baseline", 0)
    assert dropped == {"single_image_identity": 1}
    assert len(plan) == len(index) - 1
    for _, entry in plan.iterrows():
        identity = index.identity[entry.row]
        members = list(index.index[index.identity == identity])
        expected = members[1] if entry.row == members[0] else members[0]
        assert entry.reference_rows == [expected]
        assert entry.reference_image_id == index.image_id[expected] != index.image_id[entry.row]

    others, _ = core.select_references(index, "mean_others")
    assert all(row not in refs and len(refs) >= 1 for row, refs in zip(others.row, others.reference_rows))
    pairs = pd.DataFrame({"image_id": [index.image_id[0], index.image_id[1], "ghost/x"],
                          "reference_image_id": [index.image_id[2], index.image_id[1], index.image_id[0]]})
    explicit, dropped = core.select_references(index, "pairs", pairs=pairs)
    assert list(explicit.row) == [0] and explicit.reference_image_id[0] == index.image_id[2]
    assert dropped["self_reference"] == 1 and dropped["pair_image_missing"] == 1
    with pytest.raises(LeamError, match="leam.reference"):
        core.select_references(index, "nearest")


def test_overall_map_is_mean_of_max_normalised_layers():
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, 0, 0], maps[0, 0, 1, 1] = 2.0, 1.0
    maps[0, 1, 2, 2] = 50.0
    overall = core.overall_map(maps)
    assert overall.shape == (1, 4, 4)
    assert torch.isclose(overall[0, 0, 0], torch.tensor(1 / 3)) and torch.isclose(overall[0, 1, 1], torch.tensor(0.5 / 3))
    assert torch.isclose(overall[0, 2, 2], torch.tensor(1 / 3)) and torch.isfinite(overall).all()
    assert torch.isclose(core.area_downsample(maps, 2).sum() * 4, maps.sum())


def registered_models() -> list[str]:
    return available_models()


@pytest.mark.parametrize("name", registered_models())
def test_registered_model_fast_path_equals_reference_on_real_faces(name, weights_dir, real_faces):
    """One real same-person pair; every layer for dlib_resnet, the shallowest, a middle and the deepest otherwise.

    One image on both sides, but the fast path pads every pass to 16 rows (leam.device) and the reference runs one
    row, so their convolutions take different kernels (float32 summation order): 5e-5 of the peak, not 1e-5
    (mobilefacenet's deepest layer differs by 1.05e-5). A wrong map differs by order 1.
    """
    spec, model = load_registered(name, weights_dir)
    embeddings = embed_frames(model, spec, real_faces["frames"][:2], real_faces["landmarks"][:2], FRAME_PADDING)
    inputs, _ = to_model_input(spec, real_faces["frames"][:1], real_faces["landmarks"][:1], FRAME_PADDING)
    fast = core.leam_maps(model, inputs, embeddings[1:2], spec.layers)
    assert fast.maps.shape == (1, len(spec.layers), spec.input_size, spec.input_size)
    checked = range(len(spec.layers)) if name == "dlib_resnet" else sorted({0, len(spec.layers) // 2, len(spec.layers) - 1})
    for j in checked:
        slow = reference_map(model, inputs[0], embeddings[1], spec.layers[j])
        assert float(slow.max()) > 0
        assert_close(fast.maps[0, j], slow, tol=5e-5)


@pytest.mark.parametrize("name", registered_models())
def test_registered_model_map_lies_on_the_face(name, weights_dir, real_faces):
    spec, model = load_registered(name, weights_dir)
    index = real_faces["index"]
    plan, _ = core.select_references(index, "baseline", 0)
    plan = plan.head(3)
    embeddings = embed_frames(model, spec, real_faces["frames"], real_faces["landmarks"], FRAME_PADDING)
    rows = list(plan.row)
    result = core.frame_leam_maps(model, spec, real_faces["frames"][rows], real_faces["landmarks"][rows],
                                  reference_embeddings(F.normalize(embeddings, dim=1), plan.reference_rows),
                                  spec.layers, FRAME_PADDING)
    overall = core.overall_map(result.maps)
    assert result.maps.shape == (3, len(spec.layers), FRAME_SIZE, FRAME_SIZE)
    assert (result.cosine > 0).all(), "photos of the same person should not be dissimilar"
    for n, row in enumerate(rows):
        hull = cv2.convexHull(real_faces["landmarks"][row].astype(np.int32))
        mask = np.zeros((FRAME_SIZE, FRAME_SIZE), np.uint8)
        cv2.fillConvexPoly(mask, hull, 1)
        mask = cv2.dilate(mask, np.ones((21, 21), np.uint8))  # ~10% of the face width on each side
        energy = overall[n].numpy()
        assert energy.max() > 0
        inside = float((energy * mask).sum() / energy.sum())
        assert inside > 0.6, f"{name}: only {inside:.2f} of the overall map on the face"
