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

and lists ``arcface_r100`` under ``models``. Each configured entry becomes a registry spec; bare
architectures are *not* registered, so ``available_models()`` never offers a network with random
weights (use :func:`build` for tests and benchmarks).

Input geometry: 112x112 pixels, the face placed by a 5-point similarity (eye centres, nose tip, mouth
corners taken from the 68 frame landmarks) onto the standard ArcFace template, as insightface's
``norm_crop`` does.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from leam.errors import ChecksumError, LeamError, check_choice
from leam.io import download_to, load_params, sha256_file
from leam.models.registry import _REGISTRY, ModelSpec, available_models, register

log = logging.getLogger(__name__)

INPUT_SIZE = 112
EMBEDDING_DIM = 512

ARCHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}

# insightface's ArcFace alignment template for 112x112 crops, (x, y) pixels, image-left point first:
# left-of-image eye centre, right-of-image eye centre, nose tip, left and right mouth corners.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


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


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """dlib 68-point landmarks (N, 68, 2) -> ArcFace's 5 points (N, 5, 2), same order as the template."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise LeamError(f"expected landmarks of shape (N, 68, 2), got {landmarks.shape}")
    return np.stack([
        landmarks[:, 36:42].mean(axis=1),  # eye on the image's left (the subject's right eye)
        landmarks[:, 42:48].mean(axis=1),
        landmarks[:, 30],                  # nose tip
        landmarks[:, 48],                  # mouth corner on the image's left
        landmarks[:, 54],
    ], axis=1)


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) source -> target.

    source (N, P, 2), target (P, 2) or (N, P, 2) -> (N, 2, 3). Closed form of Umeyama's estimate for 2-D.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), source.shape)
    src_mean, dst_mean = source.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    src, dst = source - src_mean, target - dst_mean
    norm = (src ** 2).sum(axis=(1, 2))
    a = (src * dst).sum(axis=(1, 2)) / norm                                              # s * cos
    b = (src[..., 0] * dst[..., 1] - src[..., 1] * dst[..., 0]).sum(axis=1) / norm      # s * sin
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], axis=1)             # (N, 2, 2)
    shift = dst_mean[:, 0] - np.einsum("nij,nj->ni", linear, src_mean[:, 0])
    return np.concatenate([linear, shift[..., None]], axis=2)


def arcface_input_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    """Frame landmarks (N, 68, 2) -> (N, 2, 3) frame -> 112x112 ArcFace input pixel matrices."""
    del frame_size, frame_padding  # the fit uses the landmarks only
    return similarity_fit(five_points(landmarks), ARCFACE_TEMPLATE)


def _fetch(path_or_url: str, name: str, weights_dir: Path) -> Path:
    """Local file for a checkpoint: the path itself, or a download cached as ``weights_dir/<name>.pth``."""
    scheme = urllib.parse.urlparse(path_or_url).scheme
    if scheme not in ("http", "https", "file"):
        path = Path(os.path.expanduser(path_or_url))
        if not path.is_file():
            raise LeamError(f"checkpoint for model {name!r} not found: {path} (model_zoo.{name}.path_or_url)")
        return path
    cached = weights_dir / f"{name}.pth"
    if not cached.is_file():
        log.info("downloading %s -> %s", path_or_url, cached)
        download_to(path_or_url, cached, f"checkpoint for model {name!r}")
    return cached


def load_checkpoint(arch: str, path: Path, sha256: str, name: str = "iresnet") -> IResNet:
    """Build ``arch`` and load ``path`` (a state dict) after checking its sha256; strict key match."""
    actual = sha256_file(path)
    if actual.lower() != str(sha256).lower():
        raise ChecksumError(f"checksum mismatch for model {name!r} ({path}): expected sha256 {sha256}, got {actual}")
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
    """A registry spec for one user checkpoint (not registered; see :func:`register_zoo`)."""
    check_choice(f"model_zoo.{name}.arch", arch, ARCHS)
    if not path_or_url or not sha256:
        raise LeamError(f"model_zoo.{name} needs both path_or_url and sha256")

    def load(weights_dir: Path) -> nn.Module:
        return load_checkpoint(arch, _fetch(str(path_or_url), name, Path(weights_dir)), str(sha256), name)

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


def register_zoo(params: dict[str, Any]) -> list[str]:
    """Register every ``model_zoo`` entry of ``params``; re-registering the same entry is a no-op."""
    try:  # populate the built-in models first: the registry only populates itself while it is empty
        available_models()
    except ImportError:  # a model family's module is missing; its own stage reports that
        pass
    zoo = params.get("model_zoo") or {}
    if not isinstance(zoo, dict):
        raise LeamError("model_zoo must map model names to {arch, path_or_url, sha256}")
    names = []
    for name, entry in zoo.items():
        if not isinstance(entry, dict) or "arch" not in entry:
            raise LeamError(f"model_zoo.{name} must be a mapping with arch, path_or_url and sha256")
        spec = checkpoint_spec(str(name), str(entry["arch"]), str(entry.get("path_or_url", "")),
                               str(entry.get("sha256", "")), entry.get("layers"))
        if name in _REGISTRY:
            if _REGISTRY[name].description != spec.description:
                raise LeamError(f"model {name!r} is already registered as {_REGISTRY[name].description!r}")
            continue
        register(spec)
        names.append(str(name))
    return names


def _register_from_params_file() -> None:
    """Import-time registration from ``params.yaml`` in the working directory (stages run from the root)."""
    try:
        params = load_params()
    except LeamError:
        return
    register_zoo(params)


_register_from_params_file()
