"""Test inputs of leam.attribution: a small seeded CNN, a network that looks at one patch only, synthetic frames.

Imported by the tests/test_attribution_*.py modules and tests/test_explain_stage.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.attribution.methods import SourceBatch
from leam.frame import dlib_chip_matrix
from leam.models.spec import ModelSpec
from leam.occlusion.targets import Target

FRAME, PADDING, INPUT = 96, 0.5, 48


class SmallNet(nn.Module):
    """A seeded CNN obeying the registry contract (RGB 0..255 in, (N, 16) out), with an in-place residual add."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=0)
        self.fc = nn.Linear(16 * 4, 16)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.act2(self.conv2(self.act1(self.conv1(x / 127.5 - 1.0))))
        c = self.conv3(b)
        c += 0.1 * F.avg_pool2d(b, 3, 2)  # in place after the layer's output: the hook trap
        return self.fc(F.adaptive_avg_pool2d(c, 2).flatten(1))


LAYERS = ("conv1", "act2", "conv3")


def chip_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    """Frame -> a 48 px dlib chip with padding 0.25: not the identity, so placement and warps are exercised."""
    return np.repeat(dlib_chip_matrix(frame_size, frame_padding, INPUT, 0.25)[None], len(landmarks), axis=0)


def small_spec(seed: int = 0, name: str = "small") -> ModelSpec:
    return ModelSpec(name=name, description="seeded small CNN (test)", input_size=INPUT, embedding_dim=16,
                     layers=LAYERS, load=lambda weights_dir: SmallNet(seed), input_warp=chip_warp)


def smooth_frames(count: int, size: int = FRAME, seed: int = 0) -> np.ndarray:
    """uint8 (N, S, S, 3) smooth random images (blurred noise): many distinct gradients, no flat areas."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.random((count, 3, size // 8, size // 8), dtype=np.float32))
    frames = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 255
    return frames.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()


def square_region(count: int, size: int = FRAME, margin: int = 16) -> np.ndarray:
    """bool (N, S, S): a centred square face region."""
    region = np.zeros((count, size, size), dtype=bool)
    region[:, margin:size - margin, margin:size - margin] = True
    return region


def source_batch(model: nn.Module, spec: ModelSpec, frames: np.ndarray, references: torch.Tensor,
                 geometries=None, image_ids=None, landmarks=None, **options) -> SourceBatch:
    """A SourceBatch of frames under ``spec`` (zero landmarks by default: ``chip_warp`` does not use them)."""
    n = len(frames)
    landmarks = np.zeros((n, 68, 2), dtype=np.float32) if landmarks is None else landmarks
    target = Target.from_spec(spec, model, landmarks, frames.shape[1], PADDING)
    return SourceBatch(model=model, spec=spec, target=target, frames=frames, landmarks=landmarks, rows=np.arange(n),
                       references=references, region=square_region(n, frames.shape[1]),
                       image_ids=image_ids or [f"id{i}/{i}" for i in range(n)], layers=spec.layers,
                       geometries=geometries, padding=PADDING, **options)


class PatchNet(nn.Module):
    """A network that looks at one patch only: a positive 1x1 conv, then the pixels of one square of its output.

    Input (N, 3, S, S) RGB 0..255 in the frame itself (identity warp); embedding = the conv outputs inside
    ``patch`` (y0, x0, side) flattened, plus a constant part so a blacked-out patch still has a direction.
    """

    def __init__(self, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.patch = patch
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0]], [[0.5]], [[0.2]]], [[[0.1]], [[0.7]], [[1.0]]]]))
            self.conv.bias.fill_(0.05)
        self.act = nn.ReLU()
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, x0, side = self.patch
        features = self.act(self.conv(x / 255.0))[:, :, y0:y0 + side, x0:x0 + side]
        return torch.cat([features.flatten(1), torch.full((x.shape[0], 4), 0.5)], dim=1)


def identity_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float) -> np.ndarray:
    return np.repeat(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), len(landmarks), axis=0)


def patch_spec(patch: tuple[int, int, int], size: int = FRAME) -> ModelSpec:
    net = PatchNet(patch)
    dim = 2 * patch[2] * patch[2] + 4
    return ModelSpec(name="patch", description="looks at one patch (test)", input_size=size, embedding_dim=dim,
                     layers=("act",), load=lambda weights_dir: net, input_warp=identity_warp)
