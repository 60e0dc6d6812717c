"""Model registry: one name -> everything LEAM, occlusion and verification need to use a network.

Contract of every registered model (the ``nn.Module`` returned by ``ModelSpec.load``):
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
from typing import Callable

import numpy as np
import torch.nn as nn

from leam.errors import LeamError


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


_REGISTRY: dict[str, ModelSpec] = {}
_POPULATED = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _populate() -> None:
    """Import every model family once; each module registers its specs on import."""
    global _POPULATED
    if _POPULATED:
        return
    _POPULATED = True
    from leam.models import dlib_resnet, human_models, iresnet  # noqa: F401


def available_models() -> list[str]:
    _populate()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _populate()
    if name not in _REGISTRY:
        raise LeamError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def resolve_layers(spec: ModelSpec, model: nn.Module, layers: list[str] | None) -> list[str]:
    """Check requested layer names against the module; None means the spec's defaults."""
    names = list(layers) if layers else list(spec.layers)
    known = dict(model.named_modules())
    bad = [name for name in names if name not in known]
    if bad:
        raise LeamError(
            f"unknown layer(s) {', '.join(map(repr, bad))} for model {spec.name!r}; "
            f"default layers: {', '.join(spec.layers)} (see `python -m stages.models --list`)"
        )
    return names
