"""Attribution methods on one objective, ``s = cos(f(x), r)``, in one registry: a new method is one small class.

Every method takes a :class:`SourceBatch` (photos in the analysis frame, their references, the source
network) and returns ``{label: maps (N, S, S) float32}`` in analysis-frame pixels, higher = more relevant
to the match. Gradient methods share one forward and one backward pass per batch
(:attr:`SourceBatch.gradients`, :func:`leam.attribution.gradients.pair_gradients`) and are placed in the
frame as LEAM maps are. Labels are ``<method>`` or ``<method>:<map>`` for methods with one map per layer.

========================== ============================================================================
``leam``                   LEAM (:func:`leam.core.layer_map`, ``supports_match``): ``ReLU(sum_c ReLU(ds/dA_c) A'_c)``
                           per layer of ``maps``; ``overall`` = mean of max-normalised layer maps
                           (:func:`leam.core.overall_map`). ``A'`` = the run's ``negative_activations``.
``leam_opposes``           the same with ``opposes_match`` (``ReLU(-ds/dA)``: what pulls x away from r)
``layercam_fusion``        LayerCAM's multi-layer fusion (Jiang et al. 2021): each layer's LEAM map divided by
                           its own peak, then the element-wise maximum over layers
``layercam_fusion_opposes`` the same with ``opposes_match``
``gradcam``                Grad-CAM (Selvaraju et al. 2017) on the same layers: ``ReLU(sum_c mean_hw(ds/dA_c) A_c)``;
                           ``overall`` as for LEAM
``saliency``               input-gradient saliency (Simonyan et al. 2014): ``max_c |ds/dx_c|``
``gradient_x_input``       ``|sum_c x_c ds/dx_c|``, x in 0..255 RGB (black is the baseline, as the black fill)
``occlusion``              black-box occlusion sensitivity (:mod:`leam.attribution.sensitivity`)
``random_face``            i.i.d. uniform scores (``leam.occlusion.masks.random_scores``, kind ``face``): scattered
                           face pixels (the curves rank face pixels only, so ``uniform`` would be the same)
``random_blob``            a disc growing from a random face pixel (``leam.occlusion.masks.random_blob_scores``)
========================== ============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from leam import core
from leam.attribution.gradients import PairGradients, pair_gradients
from leam.attribution.sensitivity import occlusion_sensitivity
from leam.embedding import frames_to_tensor, to_model_input
from leam.errors import LeamError, check_choice
from leam.occlusion.masks import random_blob_scores, random_scores
from leam.placement import CellGeometry

if TYPE_CHECKING:
    from leam.models.spec import ModelSpec
    from leam.occlusion.targets import Target

__all__ = ["METHODS", "SIGNED", "Method", "SourceBatch", "build_methods", "method_sign", "register_method"]

OVERALL = "overall"


@dataclass
class SourceBatch:
    """A batch of (photo, reference) pairs under one source network: what every method reads.

    frames uint8 (N, S, S, 3) and landmarks (N, 68, 2) in the analysis frame; references (N, D) the
    source's reference embeddings; region bool (N, S, S) the face; rows (N,) the photos' rows in
    ``target`` (the source as a frame embedder, for black-box methods); layers / geometries /
    negative_activations as the leam run recorded them (``layers.json``).
    """

    model: nn.Module
    spec: ModelSpec
    target: Target
    frames: np.ndarray
    landmarks: np.ndarray
    rows: np.ndarray
    references: torch.Tensor
    region: np.ndarray
    image_ids: Sequence[str]
    layers: tuple[str, ...]
    geometries: Mapping[str, CellGeometry] | None
    negative_activations: str = "keep"
    padding: float = 0.5
    seed: int = 0
    fill: str = "black"
    batch_size: int = 32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _leam_layers: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    @property
    def frame_size(self) -> int:
        return int(self.frames.shape[1])

    @cached_property
    def gradients(self) -> PairGradients:
        """The one forward + backward pass every gradient method of this batch shares."""
        inputs, matrices = to_model_input(self.spec, self.frames, self.landmarks, self.padding, self.device)
        return pair_gradients(self.model, inputs, self.references.to(self.device), self.layers, matrices,
                              self.frame_size, self.geometries)

    def leam_layers(self, sign: str) -> torch.Tensor:
        """(N, L, S, S) LEAM layer maps of ``sign`` in the frame, computed once per batch and sign
        (:func:`leam.core.layer_map` with the run's ``negative_activations``, placed as LEAM places them)."""
        if sign not in self._leam_layers:
            g = self.gradients
            self._leam_layers[sign] = g.layers_to_frame({n: core.layer_map(g.activations[n], g.gradients[n], sign,
                                                                           self.negative_activations)
                                                         for n in self.layers})
        return self._leam_layers[sign]

    @cached_property
    def frame_tensor(self) -> torch.Tensor:
        """(N, 3, S, S) float RGB 0..255 on the device."""
        return frames_to_tensor(self.frames, self.device)


class Method:
    """An attribution method: ``method(batch) -> {label: (N, S, S) float32 frame maps}``."""

    name: ClassVar[str]
    sign: ClassVar[str] = "none"

    def __init__(self, **_: object) -> None:  # options a method does not use are ignored
        pass

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        raise NotImplementedError


METHODS: dict[str, Callable[..., Method]] = {}
"""Registry: method name -> factory(**options) (options: ``maps``, ``patch``, ``stride``; unused ones ignored)."""
SIGNED = {"leam": "leam_opposes", "layercam_fusion": "layercam_fusion_opposes"}
"""Methods that exist with both signs of the objective: supports_match name -> opposes_match name."""


def register_method(name: str, factory: Callable[..., Method] | None = None):
    """Register ``factory`` (a Method class or a partial of one) as ``name``; usable as a class decorator."""
    def add(made: Callable[..., Method]) -> Callable[..., Method]:
        if name in METHODS:
            raise LeamError(f"attribution method {name!r} is already registered")
        METHODS[name] = made
        return made
    return add(factory) if factory is not None else add


def method_sign(label: str) -> str:
    """``supports_match``, ``opposes_match`` or ``none`` for a map label (``leam_opposes:overall`` ...)."""
    family = label.split(":")[0]
    if family in SIGNED:
        return "supports_match"
    return "opposes_match" if family in SIGNED.values() else "none"


def _pick_maps(name: str, framed: torch.Tensor, layers: Sequence[str], maps: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{name:map: (N, S, S)}`` for each requested map the model has (``overall`` or a layer of ``layers``)."""
    out = {}
    for wanted in maps:
        if wanted == OVERALL:
            out[f"{name}:{wanted}"] = core.overall_map(framed)
        elif wanted in layers:
            out[f"{name}:{wanted}"] = framed[:, list(layers).index(wanted)]
    return out


class Leam(Method):
    """LEAM per layer and ``overall``, through :func:`leam.core.layer_map` (one pass for all layers)."""

    name = "leam"
    sign = "supports_match"

    def __init__(self, maps: Sequence[str] = (OVERALL,), sign: str = "supports_match", **_: object) -> None:
        check_choice("sign", sign, core.SIGNS)
        self.maps, self.sign = tuple(maps), sign
        self.name = "leam" if sign == "supports_match" else "leam_opposes"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        return _pick_maps(self.name, batch.leam_layers(self.sign), batch.layers, self.maps)


class LayerCamFusion(Leam):
    """LayerCAM's fusion of the LEAM layer maps: per-layer peak scaling, then the element-wise max."""

    def __init__(self, sign: str = "supports_match", **_: object) -> None:
        super().__init__((), sign)
        self.name = "layercam_fusion" if sign == "supports_match" else "layercam_fusion_opposes"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        framed = batch.leam_layers(self.sign)
        peak = framed.amax(dim=(-2, -1), keepdim=True)
        scaled = torch.where(peak > 0, framed / peak.clamp_min(torch.finfo(framed.dtype).tiny), torch.zeros_like(framed))
        return {self.name: scaled.amax(dim=1)}


class GradCam(Method):
    """Grad-CAM on the LEAM layers: channel weights = spatial mean of ds/dA, ReLU of the weighted sum."""

    name = "gradcam"

    def __init__(self, maps: Sequence[str] = (OVERALL,), **_: object) -> None:
        self.maps = tuple(maps)

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        g = batch.gradients
        per_layer = {n: torch.relu((g.gradients[n].mean(dim=(2, 3), keepdim=True) * g.activations[n]).sum(dim=1))
                     for n in batch.layers}
        return _pick_maps(self.name, g.layers_to_frame(per_layer), batch.layers, self.maps)


class Saliency(Method):
    """Input-gradient saliency: the largest absolute channel gradient of each input pixel."""

    name = "saliency"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        g = batch.gradients
        return {self.name: g.input_to_frame(g.input_gradient.abs().amax(dim=1))}


class GradientXInput(Method):
    """Gradient x input: |sum over channels of x * ds/dx| (x = RGB 0..255 pixels: black is the baseline)."""

    name = "gradient_x_input"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        g = batch.gradients
        return {self.name: g.input_to_frame((g.input_gradient * g.inputs).sum(dim=1).abs())}


class Occlusion(Method):
    """Black-box occlusion sensitivity of the source network (sliding ``patch`` px, every ``stride`` px)."""

    name = "occlusion"

    def __init__(self, patch: int = 32, stride: int = 16, **_: object) -> None:
        self.patch, self.stride = int(patch), int(stride)

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        region = torch.as_tensor(np.asarray(batch.region), device=batch.device)
        maps = occlusion_sensitivity(batch.target.embed, batch.frame_tensor, np.asarray(batch.rows),
                                     batch.references.to(batch.device), region, self.patch, self.stride, batch.fill,
                                     batch.batch_size)
        return {self.name: maps}


class RandomFace(Method):
    """Scattered random face pixels: i.i.d. scores seeded per (seed, image id) as the occlusion baseline."""

    name = "random_face"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        return {self.name: random_scores(list(batch.image_ids), batch.frame_size, batch.seed, "face", 0).to(batch.device)}


class RandomBlob(Method):
    """One disc, grown from a random face pixel (seeded per image id), as the occlusion baseline."""

    name = "random_blob"

    def __call__(self, batch: SourceBatch) -> dict[str, torch.Tensor]:
        region = torch.as_tensor(np.asarray(batch.region), device=batch.device)
        return {self.name: random_blob_scores(list(batch.image_ids), region, batch.seed, 0)}


register_method("leam", partial(Leam, sign="supports_match"))
register_method("leam_opposes", partial(Leam, sign="opposes_match"))
register_method("layercam_fusion", partial(LayerCamFusion, sign="supports_match"))
register_method("layercam_fusion_opposes", partial(LayerCamFusion, sign="opposes_match"))
for _method in (GradCam, Saliency, GradientXInput, Occlusion, RandomFace, RandomBlob):
    register_method(_method.name, _method)


def build_methods(names: Sequence[str], **options: object) -> list[Method]:
    """Instances of the registered methods ``names`` (params ``explain.methods``), in order."""
    for name in names:
        check_choice("explain.methods", name, list(METHODS))
    return [METHODS[name](**options) for name in names]
