"""Projected gradient descent against an ensemble of source networks, confined to a mask and an epsilon ball.

The perturbation ``delta`` lives in the analysis frame (float (B, 3, S, S), 0..255 pixel units) and reaches
each source network through that network's own ``frame -> input`` warp (:class:`leam.occlusion.Target`),
so one perturbation serves every network, as one occlusion mask does. The objective is the mean over the
sources of s = cos(f(x + delta), r) (LEAM's score, with the photo's LEAM reference r under that source);
PGD lowers it with signed-gradient steps of ``alpha = 2.5 * epsilon / steps`` (Madry et al. 2018) and
projects after every step onto

- the mask: ``delta = 0`` outside the allowed pixels (B, S, S);
- the L-infinity ball ``|delta| <= epsilon`` and the valid pixel range ``0 <= x + delta <= 255``.

Location-free baseline (``sparse_counts``): instead of a given mask, the k pixels with the largest
gradient magnitude (L2 over the colour channels, anywhere in the frame) at the clean photo, chosen at the
first step, where the gradient is the clean one; then PGD inside them. It changes as many pixels as a
mask of k pixels, so it is the strongest location-free competitor at the same pixel budget.

Quantisation: the result is rounded to integers and clipped to ``[-floor(epsilon), floor(epsilon)]``, so a
clean uint8 frame plus it is again uint8, inside the mask and the ball; the evaluation scores exactly the
8-bit photo that is saved as PNG.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from leam.errors import LeamError
from leam.occlusion.targets import Target
from leam.topt import pixel_ranks

__all__ = ["STEP_SCALE", "ensemble_score", "optimise", "quantise"]

STEP_SCALE = 2.5
"""PGD step = STEP_SCALE * epsilon / steps: enough for the iterate to cross the ball and come back."""


def ensemble_score(frames: torch.Tensor, rows: np.ndarray, sources: Sequence[Target],
                   references: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean over ``sources`` of cos(f(frame), reference), (B,), differentiable in ``frames`` (B, 3, S, S).

    ``rows`` (B,) index each source's per-photo warp matrices; ``references[name]`` is (B, D).
    """
    scores = []
    for source in sources:
        embeddings = source.embed(frames, rows, grad=True)
        scores.append(F.cosine_similarity(embeddings, references[source.name].to(embeddings), dim=1))
    return torch.stack(scores).mean(dim=0)


def quantise(delta: torch.Tensor, frames: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Integer perturbation (B, 3, S, S): rounded, within ``floor(epsilon)`` (B,), ``frames + it`` in 0..255."""
    bound = torch.floor(epsilon).view(-1, 1, 1, 1)
    rounded = torch.maximum(torch.minimum(torch.round(delta), bound), -bound)
    return torch.clamp(frames + rounded, 0.0, 255.0) - frames


def _project(delta: torch.Tensor, frames: torch.Tensor, allowed: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    bound = epsilon.view(-1, 1, 1, 1)
    delta = torch.maximum(torch.minimum(delta, bound), -bound) * allowed[:, None]
    return torch.clamp(frames + delta, 0.0, 255.0) - frames


def optimise(frames: torch.Tensor, rows: np.ndarray, sources: Sequence[Target], references: Mapping[str, torch.Tensor],
             masks: torch.Tensor, epsilon: torch.Tensor, steps: int,
             sparse_counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD perturbations of clean frames (B, 3, S, S) float 0..255 (integer-valued) that lower the ensemble score.

    masks: bool (B, S, S), where each photo may change; epsilon: (B,) L-infinity bounds in pixel units;
    sparse_counts: optional (B,) int, > 0 where a photo's pixels are instead the top-k of its clean
    gradient magnitude (its mask is then ignored). Returns (integer perturbation (B, 3, S, S), the allowed
    pixels (B, S, S) actually used). Only ``sources`` are ever called.
    """
    if steps < 1:
        raise LeamError(f"protect.steps={steps!r} must be >= 1")
    if not sources:
        raise LeamError("protect.sources is empty: PGD needs at least one source network")
    epsilon = epsilon.to(frames)
    if bool((epsilon <= 0).any()) or bool((epsilon > 255).any()):
        raise LeamError(f"protect epsilon must be in (0, 255] pixel units, got {epsilon.tolist()}")
    allowed = masks.to(frames.device, torch.bool).clone()
    sparse = (torch.zeros(len(frames), dtype=torch.long, device=frames.device) if sparse_counts is None
              else sparse_counts.to(frames.device, torch.long))
    alpha = (STEP_SCALE * epsilon / steps).view(-1, 1, 1, 1)
    delta = torch.zeros_like(frames)
    for step in range(steps):
        delta.requires_grad_(True)
        score = ensemble_score(frames + delta, rows, sources, references)
        (gradient,) = torch.autograd.grad(score.sum(), delta)
        if step == 0 and bool((sparse > 0).any()):
            chosen = sparse > 0
            magnitude = gradient[chosen].norm(dim=1)  # (b, S, S): L2 over colour channels
            ranks = pixel_ranks(magnitude)
            allowed[chosen] = ranks < sparse[chosen].view(-1, 1, 1)
        delta = _project(delta.detach() - alpha * gradient.sign(), frames, allowed.to(frames.dtype), epsilon)
    return quantise(delta, frames, epsilon) * allowed[:, None], allowed
