"""``ModelSpec``: everything LEAM, occlusion and verification need to know about one network.

A leaf module (it imports no model family and no registry), so the families describe themselves with it
and ``leam.models.registry`` collects them, in the shape of arcface_torch's backbones + ``get_model``.

Contract of the ``nn.Module`` returned by ``ModelSpec.load``:
- input: float32 RGB tensor (N, 3, input_size, input_size) with values in 0..255; the module applies its
  own normalisation, so occlusion fills and warps work on plain pixel values;
- output: (N, embedding_dim) embeddings (normalised or not, as the network gives them);
- every name in ``layers`` is a submodule path (``model.get_submodule(name)``) whose forward output is a
  (N, C, h, w) activation: LEAM hooks these;
- parameters have ``requires_grad=False`` and the module is in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: importing the spec must not import torch
    import numpy as np
    import torch.nn as nn

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    input_size: int
    embedding_dim: int
    layers: tuple[str, ...]
    """Default LEAM layers, shallow to deep, covering every resolution."""
    load: Callable[[Path], nn.Module]
    """Build the module from the weights folder (``data/models``); raises LeamError when weights are missing."""
    input_warp: Callable[[np.ndarray, int, float], np.ndarray]
    """(frame landmarks (N, 68, 2), frame_size, frame_padding) -> (N, 2, 3) frame -> input pixel matrices."""
    verification_threshold: float | None = None
    """Euclidean distance below which two embeddings are the same person, where the authors publish one."""
    weights_files: tuple[str, ...] = field(default_factory=tuple)
    """Files under the weights folder the model needs (to tell the user what is missing)."""
