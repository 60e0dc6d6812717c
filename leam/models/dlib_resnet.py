"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a PyTorch module.

The network type is ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution stem with a
3x3/2 max pool, then 14 residual blocks (3 x 32, 4 x 64, 3 x 128, 3 x 256, 1 x 256 filters; the first block of
each later stage downsamples), a global average pool and a 128-d linear layer without bias. Batch norms are
frozen per-channel affines. Submodules are named shallow to deep (dlib counts its levels the other way):

======================  ==================  ==========  ============
module                  dlib                resolution  channels
======================  ==================  ==========  ============
``stem``                con 7x7/2, affine,  72          32
                        relu
``pool``                max_pool 3x3/2      35          32
``layer1.0``-``.2``     alevel4 (ares)      35          32
``layer2.0``-``.3``     alevel3             17          64
``layer3.0``-``.2``     alevel2             8           128
``layer4.0``-``.2``     alevel1             4           256
``layer5.0``            alevel0 (ares_down) 2           256
``fc``                  fc_no_bias 128      -           128
======================  ==================  ==========  ============

dlib details reproduced on purpose (each one changes the output if missed):
- stride-2 convolutions and pools have no padding (150 -> 72 -> 35 -> 17 -> 8 -> 4 -> 2);
- the residual add accepts different shapes: the smaller tensor is zero-padded in channels and at the
  bottom/right border (in ``layer4.0`` the main path is 3x3 but the pooled shortcut 4x4, giving 4x4);
- input is RGB minus the per-channel means, divided by 256; the 128-d output is not L2-normalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.errors import LeamError
from leam.frame import dlib_chip_matrix
from leam.models.dlib_format import DlibNetwork
from leam.models.spec import ModelSpec
from leam.models.weights import verified_weights_path

__all__ = ["CHIP_PADDING", "DEFAULT_LAYERS", "DEFAULT_MEAN_RGB", "EMBEDDING_DIM", "INPUT_SIZE", "NAME", "SPEC", "SPECS",
           "STAGES", "WEIGHTS_FILE", "DlibResNet", "FrozenAffine", "ResidualBlock", "add_zero_padded",
           "build_from_state_dict", "check_input", "convert_state_dict", "expected_dlib_layers", "freeze",
           "input_warp", "load"]

NAME = "dlib_resnet"
INPUT_SIZE = 150
CHIP_PADDING = 0.25  # dlib's recognition chip: get_face_chip(img, shape, size=150, padding=0.25)
EMBEDDING_DIM = 128
WEIGHTS_FILE = "dlib_resnet.pt"
DEFAULT_MEAN_RGB = (122.782, 117.001, 104.298)
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
"""(filters, blocks, first block downsamples) per stage, shallow to deep."""
DEFAULT_LAYERS = ("stem", "layer1.2", "layer2.0", "layer2.3", "layer3.0", "layer3.2",
                  "layer4.0", "layer4.2", "layer5.0")


class FrozenAffine(nn.Module):
    """dlib's ``affine_`` layer (a batch norm folded into per-channel ``gamma * x + beta``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of (N, C, H, W) tensors of possibly different C, H, W; missing entries are 0.

    The output has the larger size in every dimension; the smaller tensor is padded at the end of the channel
    axis and at the bottom/right border. Not in place, so hooks on either input stay valid.
    """
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (channels, height, width):
            return t
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """``ares`` / ``ares_down``: relu(block(x) + shortcut(x)); its output is the natural LEAM layer."""

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if downsample else 1)
        self.bn1 = FrozenAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = FrozenAffine(channels)
        self.shortcut = nn.AvgPool2d(2, stride=2) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(add_zero_padded(main, self.shortcut(x)))


class DlibResNet(nn.Module):
    """Float RGB 0..255 (N, 3, 150, 150) -> unnormalised 128-d descriptors (N, 128), as dlib computes them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(DEFAULT_MEAN_RGB, dtype=torch.float32))
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(3, 32, 7, stride=2, padding=0))
        self.stem.add_module("bn", FrozenAffine(32))
        self.stem.add_module("relu", nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2)
        in_channels = 32
        for index, (channels, blocks, downsample) in enumerate(STAGES, start=1):
            stage = nn.Sequential(*[ResidualBlock(in_channels if b == 0 else channels, channels, downsample and b == 0)
                                    for b in range(blocks)])
            self.add_module(f"layer{index}", stage)
            in_channels = channels
        self.fc = nn.Linear(in_channels, EMBEDDING_DIM, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_input(images)
        x = (images - self.mean_rgb[:, None, None]) / 256.0
        x = self.pool(self.stem(x))
        for index in range(1, len(STAGES) + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def check_input(images: torch.Tensor) -> None:
    """A clear error for the wrong size or dtype instead of a shape error deep inside a convolution."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise LeamError(f"{NAME} expects a float tensor of RGB values 0..255, got {kind}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise LeamError(f"{NAME} expects images of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), "
                        f"got {tuple(images.shape)}")


# --- conversion from dlib's parsed file ------------------------------------------------------------

def expected_dlib_layers(model: DlibResNet) -> list[tuple[str, str | None, dict]]:
    """The dlib layer sequence (bottom-up) the module implies: (kind, torch module path, attributes to check).

    This is the skip topology of ``anet_type`` that the .dat file does not store; the converter checks the
    parsed file against it layer by layer.
    """
    plan: list[tuple[str, str | None, dict]] = [
        ("con_4", "stem.conv", {"num_filters": 32, "nr": 7, "stride_y": 2, "padding_y": 0}),
        ("affine_", "stem.bn", {}),
        ("relu_", None, {}),
        ("max_pool_2", None, {"nr": 3, "stride_y": 2, "padding_y": 0}),
    ]
    for index, (channels, blocks, downsample) in enumerate(STAGES, start=1):
        for b in range(blocks):
            down = downsample and b == 0
            prefix = f"layer{index}.{b}"
            plan += [
                ("con_4", f"{prefix}.conv1", {"num_filters": channels, "nr": 3, "stride_y": 2 if down else 1,
                                              "padding_y": 0 if down else 1}),
                ("affine_", f"{prefix}.bn1", {}),
                ("relu_", None, {}),
                ("con_4", f"{prefix}.conv2", {"num_filters": channels, "nr": 3, "stride_y": 1, "padding_y": 1}),
                ("affine_", f"{prefix}.bn2", {}),
            ]
            if down:
                plan.append(("avg_pool_2", None, {"nr": 2, "stride_y": 2, "padding_y": 0}))
            plan += [("add_prev_", None, {}), ("relu_", None, {})]
    plan += [("avg_pool_2", None, {"nr": 0}), ("fc_2", "fc", {"num_outputs": EMBEDDING_DIM})]
    return plan


def convert_state_dict(network: DlibNetwork) -> dict[str, torch.Tensor]:
    """Map a parsed dlib file onto ``DlibResNet``'s state dict, checking every layer kind and shape."""
    model = DlibResNet()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    plan = expected_dlib_layers(model)
    if len(network.layers) != len(plan):
        raise LeamError(f"dlib file has {len(network.layers)} layers, {NAME} expects {len(plan)}")
    size = network.input_attrs.get("nr")
    if size != INPUT_SIZE:
        raise LeamError(f"dlib file has input size {size}, {NAME} expects {INPUT_SIZE}")
    state["mean_rgb"] = torch.tensor(network.input_attrs["mean_rgb"], dtype=torch.float32)
    for index, (layer, (kind, target, attrs)) in enumerate(zip(network.layers, plan)):
        if layer.kind != kind or any(layer.attrs.get(k) != v for k, v in attrs.items()):
            raise LeamError(f"dlib layer {index} is {layer.kind} {layer.attrs}, expected {kind} {attrs}")
        if target is None:
            continue
        params = torch.from_numpy(np.array(layer.params, dtype=np.float32))
        if kind == "con_4":
            weight = state[f"{target}.weight"]
            n_weight = weight.numel()
            if params.numel() != n_weight + weight.shape[0]:
                raise LeamError(f"dlib layer {index} ({target}) has {params.numel()} parameters, "
                                f"expected {n_weight + weight.shape[0]}")
            state[f"{target}.weight"] = params[:n_weight].reshape(weight.shape)
            state[f"{target}.bias"] = params[n_weight:]
        elif kind == "affine_":
            channels = state[f"{target}.weight"].numel()
            if params.numel() != 2 * channels:
                raise LeamError(f"dlib layer {index} ({target}) has {params.numel()} parameters, expected {2 * channels}")
            state[f"{target}.weight"], state[f"{target}.bias"] = params[:channels], params[channels:]
        elif kind == "fc_2":
            weight = state[f"{target}.weight"]  # (out, in); dlib stores (in, out)
            if params.numel() != weight.numel():
                raise LeamError(f"dlib fc layer has {params.numel()} parameters, expected {weight.numel()} (no bias)")
            state[f"{target}.weight"] = params.reshape(weight.shape[1], weight.shape[0]).t().contiguous()
    return state


# --- loading converted weights ---------------------------------------------------------------------

def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (LEAM differentiates to activations / the input only)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def build_from_state_dict(state: dict) -> DlibResNet:
    model = DlibResNet()
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {', '.join(result.missing_keys[:3])}{' ...' if len(result.missing_keys) > 3 else ''}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {', '.join(result.unexpected_keys[:3])}"
                        f"{' ...' if len(result.unexpected_keys) > 3 else ''}")
    if problems:
        raise LeamError(f"{NAME} state dict does not fit the network: {'; '.join(problems)}")
    return freeze(model)


def load(weights_dir: Path) -> DlibResNet:
    """``ModelSpec.load``: the converted network from ``<weights_dir>/dlib_resnet.pt``, checksum-verified
    against ``weights.json`` (:func:`leam.models.weights.verified_weights_path`)."""
    path = verified_weights_path(weights_dir, NAME)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt pickle can raise almost anything; report it on one line
        raise LeamError(f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict):
        raise LeamError(f"{path} does not hold a state dict")
    try:
        return build_from_state_dict(state)
    except RuntimeError as exc:  # shape mismatches
        raise LeamError(f"{NAME} state dict does not fit the network: {str(exc).splitlines()[-1].strip()}") from None


def input_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    """Frame -> 150x150 recognition chip: both are dlib face chips of the same face, so one fixed affine."""
    matrix = dlib_chip_matrix(frame_size, frame_padding, INPUT_SIZE, CHIP_PADDING)
    return np.broadcast_to(matrix, (len(landmarks), 2, 3)).copy()


SPEC = ModelSpec(
    name=NAME,
    description="dlib face_recognition_resnet_model_v1 (ResNet-29, 128-d, LFW 99.38%) converted from its .dat file",
    input_size=INPUT_SIZE,
    embedding_dim=EMBEDDING_DIM,
    layers=DEFAULT_LAYERS,
    load=load,
    input_warp=input_warp,
    verification_threshold=0.6,
    weights_files=(WEIGHTS_FILE,),
)

SPECS: dict[str, ModelSpec] = {NAME: SPEC}
"""This family's networks, registered by ``leam.models.registry`` (this module never imports it)."""
