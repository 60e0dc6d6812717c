"""model_zoo ``format: evolve_ir``: face.evoLVe and AdaFace IR state dicts, read from their own keys, compute what
the published modules compute, give LEAM maps and fail in one line.

The reference modules below are written here, after the published code (face.evoLVe ``model_irse.py``:
``bottleneck_IR`` / ``bottleneck_IR_SE``; AdaFace ``net.py``: ``BasicBlockIR``, ``BottleneckIR``,
``se_block``), narrower and shallower so they run in a second; they share no code with the reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from leam import core
from leam.config import validate_params
from leam.errors import ChecksumError, LeamError
from leam.frame import frame_to_input
from leam.io import sha256_file
from leam.models import evolve_ir
from leam.models.registry import _REGISTRY, describe_models, get_spec, register_zoo, resolve_layers

FRAME_PADDING = 0.5  # the analysis frame of the ``aligned_small`` / ``real_faces`` fixtures (tests/conftest.py)
WIDTHS = (8, 16, 32, 64)  # stage widths (the published networks: 64, 128, 256, 512)
DIM = 32  # embedding length (published: 512)


# ------------------------------------------------------------------------ reference modules (published layouts)
class SE(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class EvolveBottleneckIRSE(nn.Module):
    """face.evoLVe ``bottleneck_IR_SE``: [BN, Conv3x3, PReLU, Conv3x3(stride), BN, SEModule]."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if in_channel == depth else nn.Sequential(
            nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth), SE(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceBasicBlockIR(nn.Module):
    """AdaFace ``BasicBlockIR``: [BN, Conv3x3, BN, PReLU, Conv3x3(stride), BN]."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if in_channel == depth else nn.Sequential(
            nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.BatchNorm2d(depth), nn.PReLU(depth), nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceBottleneckIRSE(nn.Module):
    """AdaFace ``BottleneckIR`` + ``se_block``: [BN, Conv1x1, BN, PReLU, Conv3x3, BN, PReLU, Conv1x1(stride), BN]."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        reduced = depth // 4
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if in_channel == depth else nn.Sequential(
            nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, reduced, (1, 1), (1, 1), 0, bias=False),
            nn.BatchNorm2d(reduced), nn.PReLU(reduced), nn.Conv2d(reduced, reduced, (3, 3), (1, 1), 1, bias=False),
            nn.BatchNorm2d(reduced), nn.PReLU(reduced), nn.Conv2d(reduced, depth, (1, 1), stride, 0, bias=False),
            nn.BatchNorm2d(depth))
        self.res_layer.add_module("se_block", SE(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class Backbone(nn.Module):
    """The shared IR skeleton: stages start with a stride-2 block; AdaFace's head BN has no affine."""

    def __init__(self, unit, units, widths=WIDTHS, stem=WIDTHS[0], adaface: bool = False) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, stem, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(stem),
                                         nn.PReLU(stem))
        blocks, in_channel = [], stem
        for depth, count in zip(widths, units):
            blocks += [unit(in_channel, depth, 2)] + [unit(depth, depth, 1) for _ in range(count - 1)]
            in_channel = depth
        self.body = nn.Sequential(*blocks)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.Dropout(0.4), nn.Flatten(),
                                          nn.Linear(widths[-1] * 7 * 7, DIM), nn.BatchNorm1d(DIM, affine=not adaface))
        self.adaface = adaface

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        if self.adaface:  # AdaFace returns (x / norm, norm); the product is the un-normalised embedding
            norm = torch.norm(x, 2, 1, True)
            return torch.div(x, norm), norm
        return x


def _randomised(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights and BatchNorm running statistics, scaled so 112-px inputs stay O(1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_(0.0, (1.0 / module.weight[0].numel()) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.num_batches_tracked.fill_(1000)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5, generator=generator)
                    module.bias.normal_(0.0, 0.2, generator=generator)
            elif isinstance(module, nn.PReLU):
                module.weight.uniform_(0.0, 0.5, generator=generator)
    return net.eval()


def _register(name: str, entry: dict) -> str:
    """Validate ``entry`` as params.yaml would and register it (replacing an earlier test's entry)."""
    config = validate_params({"model_zoo": {name: entry}, "models": [name]})
    _REGISTRY.pop(name, None)
    register_zoo(config.model_zoo)
    return name


def _real_inputs(aligned_small, spec) -> torch.Tensor:
    """Every aligned face of the test slice (at least 20) warped to the spec's input, RGB 0..255."""
    result, _ = aligned_small
    assert len(result.frames) >= 20
    frames = torch.from_numpy(result.frames).permute(0, 3, 1, 2).float()
    return frame_to_input(frames, spec.input_warp(result.landmarks, result.frames.shape[1], FRAME_PADDING),
                          spec.input_size)


def _maps(model, spec, real_faces, layers):
    """LEAM maps of 6 real faces, each against another identity's embedding."""
    frames, landmarks = real_faces["frames"], real_faces["landmarks"]
    inputs = frame_to_input(torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
                            spec.input_warp(landmarks, frames.shape[1], FRAME_PADDING), spec.input_size)
    with torch.no_grad():
        references = model(inputs).roll(2, 0)
    return core.frame_leam_maps(model, spec, frames, landmarks, references, layers, FRAME_PADDING,
                                placement="receptive_field")


@pytest.fixture(scope="module")
def evolve_file(tmp_path_factory) -> tuple[Path, nn.Module]:
    """face.evoLVe IR-SE, units [1, 1, 1, 1], saved as a plain state dict (DataParallel ``module.`` prefix)."""
    net = _randomised(Backbone(EvolveBottleneckIRSE, (1, 1, 1, 1)), seed=3)
    path = tmp_path_factory.mktemp("evolve") / "backbone_ir_se.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return path, net


@pytest.fixture(scope="module")
def adaface_file(tmp_path_factory) -> tuple[Path, nn.Module]:
    """AdaFace BasicBlockIR, units [2, 2, 2, 2], saved as a Lightning checkpoint with its margin head."""
    net = _randomised(Backbone(AdaFaceBasicBlockIR, (2, 2, 2, 2), adaface=True), seed=4)
    state = {"model." + k: v for k, v in net.state_dict().items()}
    state["head.kernel"] = torch.randn(DIM, 10)
    path = tmp_path_factory.mktemp("adaface") / "adaface_ir.ckpt"
    torch.save({"epoch": 25, "global_step": 1000, "pytorch-lightning_version": "1.8.6", "state_dict": state}, path)
    return path, net


def _entry(path: Path, **extra) -> dict:
    return {"format": "evolve_ir", "path_or_url": str(path), "sha256": sha256_file(path), "embedding_dim": DIM,
            "mean": 127.5, "std": 127.5, **extra}


def test_face_evolve_ir_se_equals_its_reference_on_real_faces_and_gives_maps(evolve_file, aligned_small, real_faces,
                                                                             tmp_path):
    path, net = evolve_file
    spec = get_spec(_register("evolve_tiny", _entry(path, channel_order="RGB")))
    model = spec.load(tmp_path)
    assert isinstance(model.body[0].res_layer[5], evolve_ir.SEModule)
    layers = resolve_layers(spec, model, None)
    assert layers == ["input_layer", "body.0", "body.1", "body.2", "body.3"]  # shallow to deep, one per resolution
    images = _real_inputs(aligned_small, spec)
    with torch.no_grad():
        ours, theirs = model(images), net((images - 127.5) / 127.5)
    assert theirs.abs().max() > 0.1 and float((ours - theirs).abs().max()) <= 1e-5
    result = _maps(model, spec, real_faces, layers)
    assert result.maps.shape == (6, 5, 224, 224) and bool((result.maps.flatten(2).amax(2) > 0).all())


def test_adaface_lightning_checkpoint_equals_its_reference_on_real_faces_and_is_listed(adaface_file, aligned_small,
                                                                                       real_faces, tmp_path):
    path, net = adaface_file
    spec = get_spec(_register("adaface_tiny", _entry(path, channel_order="BGR")))
    model = spec.load(tmp_path)
    layers = resolve_layers(spec, model, None)
    assert layers == ["input_layer", "body.1", "body.3", "body.5", "body.7"]  # each stage's last block
    assert isinstance(model.body[2].shortcut_layer, nn.Sequential) and model.body[3].stride == 1
    images = _real_inputs(aligned_small, spec)
    with torch.no_grad():
        ours = model(images)
        unit, norm = net((images.flip(1) - 127.5) / 127.5)  # BGR
    theirs = unit * norm
    assert theirs.abs().max() > 0.1 and float((ours - theirs).abs().max()) <= 1e-5
    listing = "\n".join(describe_models(tmp_path))
    assert "adaface_tiny: input 112x112, embedding 32 - evolve_ir file" in listing
    for layer, shape in (("input_layer", "8x112x112"), ("body.1", "8x56x56"), ("body.7", "64x7x7")):
        assert any(line.split() == [layer, shape] for line in listing.splitlines()), (layer, listing)
    result = _maps(model, spec, real_faces, ["input_layer", "body.7"])
    assert result.maps.shape == (6, 2, 224, 224) and bool((result.maps.flatten(2).amax(2) > 0).all())


def test_adaface_bottleneck_ir_se_reads_se_block_and_the_strided_1x1(tmp_path):
    """BottleneckIR (AdaFace > 100 layers) with ``res_layer.se_block``: a 1x1 conv carries the stride."""
    net = _randomised(Backbone(AdaFaceBottleneckIRSE, (1, 2, 1, 1), widths=(16, 32, 64, 128), adaface=True), seed=5)
    path = tmp_path / "cvlface_ir_se.ckpt"  # CVLface wraps the backbone as ``net``, its HF wrapper as ``model``
    torch.save({"state_dict": {"model.net." + k: v for k, v in net.state_dict().items()}}, path)
    model = evolve_ir.load_evolve_ir(path, 112)
    assert model.body[0].res_layer[7].stride == (2, 2) and model.body[0].res_layer[7].kernel_size == (1, 1)
    assert evolve_ir.stage_layers(model) == ["input_layer", "body.0", "body.2", "body.3", "body.4"]
    images = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        unit, norm = net(images)
        torch.testing.assert_close(model(images), unit * norm, rtol=1e-5, atol=1e-5)


def test_evolve_ir_errors_are_one_line(evolve_file, tmp_path):
    path, net = evolve_file
    state = net.state_dict()

    def saved(name: str, changed: dict) -> Path:
        target = tmp_path / name
        torch.save(changed, target)
        return target

    bad_block = {**state, "body.0.res_layer.1.weight": torch.zeros(8, 8, 3)}
    gap = {k: v for k, v in state.items() if not k.startswith("body.1.res_layer.2.")}
    cases = [
        ({**_entry(path), "sha256": "0" * 64}, ChecksumError, "checksum mismatch"),
        (_entry(saved("junk.pth", {"epoch": 3})), LeamError, "is not a state dict"),
        (_entry(saved("unknown.pth", {**state, "fc.weight": torch.zeros(2)})), LeamError,
         r"1 unknown key\(s\) \['fc.weight'\]"),
        (_entry(saved("missing.pth", {k: v for k, v in state.items() if not k.startswith("output_layer")})),
         LeamError, r"missing \['output_layer'\]"),
        (_entry(saved("bad_block.pth", bad_block)), LeamError, r"body.0.res_layer.1: cannot read this entry"),
        (_entry(saved("gap.pth", gap)), LeamError, r"body.1.res_layer has no keys for entry \[2\]"),
        (_entry(path, input_size=224), LeamError, "does not fit input_size 224"),
        (_entry(path, embedding_dim=512), LeamError, r"output is \(2, 32\).*expected \(2, 512\)"),
    ]
    text = tmp_path / "not_torch.pth"
    text.write_bytes(b"this is not a checkpoint")
    cases.append((_entry(text), LeamError, "is not a torch checkpoint"))
    fake_safetensors = tmp_path / "model.safetensors"
    fake_safetensors.write_bytes((2).to_bytes(8, "little") + b"{}")
    cases.append((_entry(fake_safetensors), LeamError, "not a torch checkpoint.*safetensors.torch.load_file"))
    for entry, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            get_spec(_register("bad_ir", entry)).load(tmp_path)
        assert "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(LeamError, match="needs embedding_dim"):
        validate_params({"model_zoo": {"x": {**_entry(path), "embedding_dim": None}}})
