"""Black-box occlusion sensitivity: slide a patch over the face and record how much each position lowers the match.

The model-agnostic baseline of occlusion-map work (Zeiler & Fergus's occlusion sensitivity, 2014, as
face-verification studies apply it to matchers): for every patch position, the square of ``patch`` x ``patch`` analysis-frame
pixels (top-left corners every ``stride`` pixels) is replaced by the fill (:mod:`leam.occlusion.fills`)
and the photo re-embedded; a pixel's relevance is the mean similarity drop ``cos(clean) - cos(occluded)``
over the patches that cover it (0 where none does). Only positions whose patch touches the face region
are tried, so the cost is about (face side / stride)^2 forwards per photo, batched across photos.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from leam.errors import LeamError
from leam.occlusion.fills import fill_values, occlude

__all__ = ["patch_corners", "occlusion_sensitivity"]

Embed = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
"""``embed(frames (B, 3, S, S) float 0..255, rows (B,)) -> unit embeddings (B, D)`` (``Target.embed``)."""


def patch_corners(size: int, patch: int, stride: int) -> np.ndarray:
    """Top-left corners (P, 2) as (y, x) of a patch grid covering an S x S frame (the last row/column flush)."""
    if not 1 <= patch <= size or stride < 1:
        raise LeamError(f"explain.patch={patch} must be in 1..{size} and explain.stride={stride} >= 1")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.array([(y, x) for y in starts for x in starts], dtype=np.int64)


def occlusion_sensitivity(embed: Embed, frames: torch.Tensor, rows: np.ndarray, references: torch.Tensor,
                          region: torch.Tensor, patch: int, stride: int, fill: str,
                          batch_size: int = 32) -> torch.Tensor:
    """Sensitivity maps (N, S, S) float32: mean cosine drop of the patches covering each frame pixel.

    frames (N, 3, S, S) float RGB 0..255; rows (N,) the frames' rows for ``embed``; references (N, D);
    region (N, S, S) bool, the face (only patches touching it are tried).
    """
    n, _, size, _ = frames.shape
    corners = patch_corners(size, patch, stride)
    inside = torch.stack([region[:, y:y + patch, x:x + patch].flatten(1).any(dim=1) for y, x in corners], dim=1)
    jobs = inside.nonzero().cpu().numpy()  # (J, 2): (image, corner)
    clean = torch.nn.functional.cosine_similarity(embed(frames, rows), references, dim=1)
    fills = fill_values(frames, fill)
    total = torch.zeros((n, size, size), dtype=torch.float32, device=frames.device)
    count = torch.zeros_like(total)
    for start in range(0, len(jobs), batch_size):
        image, corner = jobs[start:start + batch_size].T
        masks = torch.zeros((len(image), size, size), dtype=torch.bool, device=frames.device)
        for k, (y, x) in enumerate(corners[corner]):
            masks[k, y:y + patch, x:x + patch] = True
        picked = torch.as_tensor(image, device=frames.device)
        occluded = occlude(frames[picked], masks, fills[picked])
        drop = clean[picked] - torch.nn.functional.cosine_similarity(embed(occluded, rows[image]),
                                                                     references[picked], dim=1)
        total.index_add_(0, picked, masks * drop[:, None, None].to(torch.float32))
        count.index_add_(0, picked, masks.to(torch.float32))
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.zeros_like(total))
