"""IResNet-18/34/50/100: the ArcFace backbones of insightface's ``arcface_torch``, for user checkpoints.

The modules use exactly the ``arcface_torch`` layout and state-dict key names (``conv1, bn1, prelu,
layer1..layer4`` of ``IBasicBlock(bn1, conv1, bn2, prelu, conv2, bn3, downsample)``, ``bn2, dropout, fc,
features``), so a ``backbone.pth`` trained there loads with ``load_state_dict(strict=True)``. Unlike the
original, ``forward`` takes RGB 0..255 and applies ArcFace's normalisation ``(x / 255 - 0.5) / 0.5`` itself
(the registry contract); the normalisation has no parameters, so the key names are untouched.

No weights ship with the project. A user adds a checkpoint with a params edit, no code change::

    model_zoo:
      arcface_r100:
        arch: iresnet100                       # iresnet18 | iresnet34 | iresnet50 | iresnet100
        path_or_url: /data/ms1mv3_r100/backbone.pth   # local path (relative to the repo root) or http(s)/file URL
        sha256: 0123...                        # required: checked before torch.load

and lists ``arcface_r100`` under ``models``. Each configured entry becomes a registry spec when a stage
that loads models calls ``leam.models.registry.register_zoo`` with its validated ``config.model_zoo`` (nothing is read
from ``params.yaml`` at import time); bare architectures are *not* registered, so
``available_models()`` never offers a network with random
weights (use :func:`build` for tests and benchmarks).

Input geometry: 112x112 pixels, the face placed by a 5-point similarity (eye centres, nose tip, mouth
corners taken from the 68 frame landmarks) onto the standard ArcFace template, as insightface's
``norm_crop`` does (``leam.geometry.arcface_input_warp``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from leam.errors import LeamError, check_choice
from leam.geometry import arcface_input_warp
from leam.models.spec import ModelSpec
from leam.models.weights import local_file, verify_sha256

__all__ = ["ARCHS", "EMBEDDING_DIM", "INPUT_SIZE", "SPECS", "IBasicBlock", "IResNet", "build", "checkpoint_spec",
           "default_layers", "load_checkpoint"]

log = logging.getLogger(__name__)

INPUT_SIZE = 112
EMBEDDING_DIM = 512

ARCHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}

def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block of IResNet; its output is *not* rectified (may be negative).

    ``out += identity`` is in-place: a hook that keeps ``bn3``'s output without copying it sees the sum.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return out


class IResNet(nn.Module):
    """IResNet backbone: RGB 0..255 (N, 3, 112, 112) -> un-normalised embedding (N, 512)."""

    fc_scale = 7 * 7

    def __init__(self, blocks: tuple[int, int, int, int], dropout: float = 0.0, num_features: int = EMBEDDING_DIM):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(64, blocks[0], stride=2)
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], stride=2)
        self.layer4 = self._make_layer(512, blocks[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-05),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 - 0.5) / 0.5
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.features(self.fc(x))


def build(arch: str) -> IResNet:
    """A randomly initialised backbone in eval mode with frozen parameters (tests, benchmarks, shapes)."""
    check_choice("arch", arch, ARCHS)
    generator = torch.Generator().manual_seed(0)
    model = IResNet(ARCHS[arch])
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):  # He init keeps activations O(1) through the stack
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d) and name.endswith("bn3"):
                module.weight.fill_(0.3)  # damp each residual branch so deep stacks do not blow up
    return model.eval().requires_grad_(False)


def default_layers(arch: str) -> tuple[str, ...]:
    """LEAM layers, shallow to deep: the stem and the output of every block's resolution stage ends.

    Two block outputs per stage (the first block, which changes resolution, and the last one) plus the
    stem cover all five resolutions (112, 56, 28, 14, 7 pixels) with 9 maps.
    """
    check_choice("arch", arch, ARCHS)
    names = ["prelu"]
    for stage, count in enumerate(ARCHS[arch], start=1):
        names += [f"layer{stage}.0", f"layer{stage}.{count - 1}"]
    return tuple(names)


def load_checkpoint(arch: str, path: Path, sha256: str, name: str = "iresnet") -> IResNet:
    """Build ``arch`` and load ``path`` (a state dict) after checking its sha256; strict key match."""
    verify_sha256(path, sha256, expected_by=f"model_zoo.{name}.sha256 is")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or non-tensor pickle
        raise LeamError(f"cannot read checkpoint {path} for model {name!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LeamError(f"checkpoint {path} for model {name!r} is not a state dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}  # DataParallel checkpoints
    model = IResNet(ARCHS[arch])
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LeamError(
            f"checkpoint {path} does not fit {arch} (model {name!r}): "
            f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0])
        raise LeamError(f"checkpoint {path} does not fit {arch} (model {name!r}): {first}") from None
    return model.eval().requires_grad_(False)


def checkpoint_spec(name: str, arch: str, path_or_url: str, sha256: str,
                    layers: tuple[str, ...] | None = None) -> ModelSpec:
    """A registry spec for one user checkpoint (not registered; see ``leam.models.registry.register_zoo``)."""
    check_choice(f"model_zoo.{name}.arch", arch, ARCHS)
    if not path_or_url or not sha256:
        raise LeamError(f"model_zoo.{name} needs both path_or_url and sha256")

    def load(weights_dir: Path) -> nn.Module:
        path = local_file(str(path_or_url), Path(weights_dir) / f"{name}.pth", f"checkpoint for model {name!r}",
                          f"model_zoo.{name}.path_or_url")
        return load_checkpoint(arch, path, str(sha256), name)

    return ModelSpec(
        name=name,
        description=f"{arch} (arcface_torch layout) from {path_or_url}",
        input_size=INPUT_SIZE,
        embedding_dim=EMBEDDING_DIM,
        layers=tuple(layers) if layers else default_layers(arch),
        load=load,
        input_warp=arcface_input_warp,
        verification_threshold=None,
    )



SPECS: dict[str, ModelSpec] = {}
"""No built-in networks: a bare architecture has random weights. Checkpoints come from ``model_zoo``
(:func:`checkpoint_spec`, registered by ``leam.models.registry.register_zoo``)."""
