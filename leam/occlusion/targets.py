"""The target of an occlusion: a model that embeds (occluded) analysis frames, and the cosine it is judged by.

A model sees a frame only through its own ``frame -> input`` warp (``leam.frame.frame_to_input``), applied
at embedding time, so one frame mask serves every target model. Frames are float (B, 3, S, S) RGB in
0..255; embeddings are unit-norm float32 (B, D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.frame import frame_to_input

if TYPE_CHECKING:
    from leam.models.spec import ModelSpec

__all__ = ["Target", "embed_frames", "reference_embeddings"]  # frames_tensor, cosine: helpers of leam.occlusion.drops


@dataclass
class Target:
    """A model that scores occluded frames: its module, input size and per-image frame -> input matrices."""

    name: str
    module: nn.Module
    input_size: int
    frame_to_input: np.ndarray
    """(N, 2, 3) frame pixels -> input pixels, rows aligned with the frames given to ``occlusion_drops``."""

    @classmethod
    def from_spec(cls, spec: ModelSpec, module: nn.Module, landmarks: np.ndarray, frame_size: int,
                  frame_padding: float) -> Target:
        """The target of a registered model, its input warp computed from frame landmarks (N, 68, 2)."""
        return cls(spec.name, module, spec.input_size, np.asarray(spec.input_warp(landmarks, frame_size, frame_padding)))


@torch.inference_mode()
def embed_frames(target: Target, frames: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """Unit-norm embeddings (B, D) of analysis frames (B, 3, S, S) in 0..255 under ``target``.

    ``rows`` index ``target.frame_to_input`` for the images of the batch.
    """
    inputs = frame_to_input(frames, target.frame_to_input[rows], target.input_size)
    return F.normalize(target.module(inputs).to(torch.float32), dim=1)


def reference_embeddings(clean: torch.Tensor, reference_rows: Sequence[int | Sequence[int]]) -> torch.Tensor:
    """Reference embedding (N, D) per image: one clean embedding, or the mean of several (``mean_others``).

    ``clean`` holds clean unit embeddings (M, D); entry i of ``reference_rows`` is a row of ``clean`` or a
    list of rows to average. Cosine is scale-free, so the mean need not be renormalised.
    """
    out = []
    for rows in reference_rows:
        rows = [rows] if np.isscalar(rows) else list(rows)
        out.append(clean[rows].mean(dim=0))
    return torch.stack(out)


def frames_tensor(frames: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (M, S, S, 3) frames, selected rows -> float32 (B, 3, S, S) in 0..255 on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(frames[rows])).to(device).permute(0, 3, 1, 2).to(torch.float32)


def cosine(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B,) of embeddings (B, D) to their references (B, D)."""
    return F.cosine_similarity(embeddings, references.to(embeddings.dtype), dim=1)
