"""The target of an occlusion: a model that embeds (occluded) analysis frames, and the cosine it is judged by.

A model sees a frame only through its own ``frame -> input`` warp, applied at embedding time
(:func:`leam.embedding.embed_frame_tensors`), so one frame mask serves every target model. Frames are
float (B, 3, S, S) RGB in 0..255; a target's embeddings are unit-norm float32 (B, D), and an image's
reference is :func:`leam.embedding.reference_embeddings` of the clean ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.embedding import embed_frame_tensors, embed_frames_on_grid
from leam.frame import frame_to_input as warp_to_input
from leam.frame import frame_to_input_grid

if TYPE_CHECKING:
    from leam.models.spec import ModelSpec

__all__ = ["Target"]  # cosine: a helper of leam.occlusion.drops


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

    def embed(self, frames: torch.Tensor, rows: np.ndarray, grad: bool = False) -> torch.Tensor:
        """Unit-norm embeddings (B, D) float32 of (occluded) frames (B, 3, S, S) in 0..255, one forward pass.

        ``rows`` index ``frame_to_input`` for the images of the batch. ``grad=True`` keeps the graph from
        the frames (the protect stage's PGD differentiates through the warp and the network).
        """
        matrices = self.frame_to_input[rows]
        embeddings = (self.module(warp_to_input(frames, matrices, self.input_size)) if grad
                      else embed_frame_tensors(self.module, frames, matrices, self.input_size))
        return F.normalize(embeddings.to(torch.float32), dim=1)

    def input_grid(self, rows: np.ndarray, frame_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The sampling grid (B, s, s, 2) of the ``rows`` photos' frame -> input warps (frames S x S), computed
        once to embed many occluded versions of the same photos with :meth:`embed_on_grid`."""
        rows = np.asarray(rows)
        return frame_to_input_grid(self.frame_to_input[rows], len(rows), frame_size, self.input_size, device)

    def embed_on_grid(self, frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` of frames (B, 3, S, S) whose warp grid (B, s, s, 2) is already computed (:meth:`input_grid`
        of the same photos): the same unit-norm embeddings (B, D) bit for bit, one forward pass."""
        return F.normalize(embed_frames_on_grid(self.module, frames, grid).to(torch.float32), dim=1)


def cosine(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B,) of embeddings (B, D) to their references (B, D)."""
    return F.cosine_similarity(embeddings, references.to(embeddings.dtype), dim=1)
