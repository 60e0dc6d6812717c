"""One forward and one backward pass of ``s = cos(f(x), r)`` for every gradient method, and their placement.

Every gradient method of :mod:`leam.attribution.methods` (LEAM with either sign, LayerCAM's fusion,
Grad-CAM, input saliency, gradient x input) reads the same four things of a batch of (image, reference)
pairs: each selected layer's activations ``A`` (N, C, h, w), their gradients ``ds/dA``, the model input
``x`` (N, 3, s, s, RGB 0..255) and its gradient ``ds/dx``. :func:`pair_gradients` computes all of them
from one forward and one backward pass with the hook machinery of :mod:`leam.core` (``core._captured``:
layer outputs are captured and the network gets a clone, so in-place ops cannot change them). Unlike
:func:`leam.core.leam_maps`, the input requires grad here, so the backward pass runs to the input and
yields the layer gradients and the input gradient together (the layer gradients are the same numbers).

Maps come back to the analysis frame exactly as LEAM's do (:func:`leam.core.leam_maps` +
:func:`leam.core.frame_leam_maps`): a layer's cells are placed on the model input by the run's cell
geometry (:mod:`leam.placement`; None = LayerCAM's bilinear upsampling), input-grid maps go through the
inverse of the model's input warp, frame pixels the model never saw are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam import core
from leam.errors import LeamError
from leam.frame import input_to_frame
from leam.placement import CellGeometry, place_on_input

__all__ = ["PairGradients", "pair_gradients"]


@dataclass(frozen=True)
class PairGradients:
    """Everything a gradient method needs of one batch, with the warp back to the analysis frame.

    inputs: (N, 3, s, s) model inputs (RGB 0..255); input_gradient: ds/dx, same shape.
    activations, gradients: layer name -> (N, C, h, w) A and ds/dA (detached).
    cosine: (N,) the clean pairs' cosine. matrices: (N, 2, 3) frame -> input pixels. frame_size: S.
    geometries: where each layer's cells sit on the input (None = centred upsampling).
    """

    inputs: torch.Tensor
    input_gradient: torch.Tensor
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    cosine: torch.Tensor
    matrices: np.ndarray
    frame_size: int
    geometries: Mapping[str, CellGeometry] | None

    def input_to_frame(self, maps: torch.Tensor) -> torch.Tensor:
        """Input-grid maps (N, s, s) or (N, L, s, s) -> frame (same leading dims, S, S), clamped at 0."""
        single = maps.ndim == 3
        framed = input_to_frame(maps[:, None] if single else maps, self.matrices, self.frame_size).clamp_min_(0.0)
        return framed[:, 0] if single else framed

    def layers_to_frame(self, maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Layer maps {name: (N, h, w)} -> (N, L, S, S) in the frame, placed as LEAM places them."""
        size = self.inputs.shape[-2:]
        placed = []
        for name, layer in maps.items():
            if self.geometries is not None:
                layer = place_on_input(layer, self.geometries[name])
            elif layer.shape[-2:] != size:
                layer = F.interpolate(layer[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            placed.append(layer)
        return self.input_to_frame(torch.stack(placed, dim=1))


def pair_gradients(model: nn.Module, inputs: torch.Tensor, references: torch.Tensor, layers: Sequence[str],
                   matrices: np.ndarray, frame_size: int,
                   geometries: Mapping[str, CellGeometry] | None = None) -> PairGradients:
    """Activations, ds/dA of every layer and ds/dx of ``s = cos(model(inputs), references)``, one pass each way.

    inputs: (N, 3, s, s) in the model's input geometry (``leam.embedding.to_model_input``); references
    (N, D) constants; matrices (N, 2, 3) the frame -> input warps of the same images.
    """
    core.check_model(model)
    layers = tuple(layers)
    references = torch.as_tensor(references, dtype=inputs.dtype, device=inputs.device).detach()
    with torch.enable_grad(), core._captured(model, layers) as store:
        x = inputs.detach().clone().requires_grad_(True)
        cosine = core.cosine_objective(model(x), references)
        missing = [name for name in layers if name not in store]
        if missing:
            raise LeamError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
        captured = [store[name] for name in layers]
        grads = torch.autograd.grad(cosine.sum(), [x, *captured], allow_unused=True)
    for name, gradient in zip(layers, grads[1:]):
        if gradient is None:
            raise LeamError(f"layer {name!r} does not influence the embedding; choose another layer")
    return PairGradients(inputs=x.detach(), input_gradient=grads[0], cosine=cosine.detach(),
                         activations={n: a.detach() for n, a in zip(layers, captured)},
                         gradients=dict(zip(layers, grads[1:])), matrices=np.asarray(matrices),
                         frame_size=int(frame_size), geometries=geometries)
