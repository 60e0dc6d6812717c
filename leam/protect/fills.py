"""What a protection puts into its region (question 2), besides the optimised perturbation of :mod:`leam.protect.pgd`.

- ``black``: the paper's occlusion (pixels set to 0; not bounded by epsilon, its L-infinity is reported);
- ``blur``: the occlusion stage's Gaussian blur (:func:`leam.occlusion.fills.gaussian_blur`, sigma = S/28);
- ``noise``: random signs, ``+-floor(epsilon)`` per pixel and channel, seeded per (seed, photo): the
  perturbation of the same L-infinity size as the optimised one, without the optimisation.

Frames are float (N, 3, S, S) with integer values 0..255; results are integer-valued too (8-bit photos).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import torch

from leam.errors import check_choice
from leam.occlusion.fills import fill_values, occlude

__all__ = ["FILLS", "filled"]

FILLS = ("black", "noise", "blur")


def _signs(image_ids: Sequence[str], shape: tuple[int, ...], seed: int) -> torch.Tensor:
    rows = [np.random.default_rng([int(seed), zlib.crc32(str(i).encode("utf-8")), 7]).integers(0, 2, size=shape)
            for i in image_ids]
    return torch.from_numpy(np.stack(rows).astype(np.float32) * 2 - 1)


def filled(frames: torch.Tensor, masks: torch.Tensor, fill: str, epsilon: float, image_ids: Sequence[str],
           seed: int) -> torch.Tensor:
    """Frames (N, 3, S, S) with the pixels of ``masks`` (N, S, S) replaced by ``fill`` (see module), rounded."""
    check_choice("protect.fills", fill, FILLS)
    if fill == "noise":
        noise = _signs(image_ids, tuple(frames.shape[1:]), seed).to(frames) * float(np.floor(epsilon))
        return torch.clamp(frames + noise * masks[:, None].to(frames), 0.0, 255.0)
    values = fill_values(frames, "black" if fill == "black" else "blur")
    return torch.round(occlude(frames, masks.to(torch.bool), values))
