"""What occluded pixels become (the imputer of the occlusion test), and the occlusion itself.

Frames are float (N, 3, S, S) RGB in 0..255 in the analysis frame; masks bool (N, S, S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leam.errors import check_choice

__all__ = ["BLUR_SIGMA_FRACTION", "FILLS", "fill_values", "gaussian_blur", "occlude"]

FILLS = ("black", "mean", "blur")
BLUR_SIGMA_FRACTION = 1.0 / 28.0
"""Gaussian sigma of the ``blur`` fill as a fraction of the frame side (8 px at S = 224): strong enough
to remove identity detail of eyes and mouth, weak enough to keep the local colour."""


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, S, S) with reflect padding; sigma in pixels."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=frames.dtype, device=frames.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = frames.shape[1]
    padded = F.pad(frames, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def fill_values(frames: torch.Tensor, fill: str) -> torch.Tensor:
    """What occluded pixels become, (N, 3, S, S) in 0..255: black, the image's mean colour, or a blur."""
    check_choice("occlusion.fill", fill, FILLS)
    if fill == "black":
        return torch.zeros_like(frames)
    if fill == "mean":
        return frames.mean(dim=(2, 3), keepdim=True).expand_as(frames)
    return gaussian_blur(frames, sigma=BLUR_SIGMA_FRACTION * frames.shape[-1])


def occlude(frames: torch.Tensor, masks: torch.Tensor, fills: torch.Tensor) -> torch.Tensor:
    """Frames (N, 3, S, S) with the pixels of ``masks`` (N, S, S) replaced by ``fills`` (N, 3, S, S)."""
    return torch.where(masks[:, None], fills, frames)
