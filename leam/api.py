"""The public LEAM API: one small class over the machinery of :mod:`leam.core`, and model registration.

``import leam`` exposes these names lazily (``leam.LEAM``, ``leam.register_model``, ...); this module holds
them. Nothing here reimplements the maps: :class:`LEAM` hands its arguments to
:func:`leam.core.leam_maps`, with the cell placement of :func:`leam.placement.cached_geometries`, and
:func:`register_model` builds a :class:`leam.models.spec.ModelSpec` for the registry.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from leam.core import NEGATIVE_ACTIVATIONS, SIGNS, LeamMaps, check_model, leam_maps
from leam.errors import LeamError, check_choice
from leam.geometry import arcface_input_warp
from leam.models.registry import get_spec, register, resolve_layers
from leam.models.spec import ModelSpec
from leam.placement import PLACEMENTS, cached_geometries

__all__ = ["LEAM", "OBJECTIVES", "register_model"]

OBJECTIVES = ("cosine",)
"""What LEAM explains: ``cosine`` = s = cos(f(x), r), the similarity of an image's embedding to a reference."""

InputWarp = Callable[[np.ndarray, int, float], np.ndarray]


def _layer_names(model: nn.Module, layers: str | Sequence[str], owner: str) -> tuple[str, ...]:
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise LeamError(f"{owner}: no layers given; name submodules of the model, e.g. "
                        f"{', '.join(name for name, _ in list(model.named_modules())[1:6])}")
    known = dict(model.named_modules())
    bad = [name for name in names if name not in known]
    if bad:
        raise LeamError(f"{owner}: unknown layer(s) {', '.join(map(repr, bad))}; the model has e.g. "
                        f"{', '.join(name for name in list(known)[1:6])}")
    return names


class LEAM:
    """Layer Embedding Activation Mapping: LayerCAM for face-embedding networks.

    Borsukiewicz et al., *Explainable AI for Analyzing Person-Specific Patterns in Facial Recognition
    Tasks*, 2025, https://arxiv.org/abs/2509.17457; built on LayerCAM (Jiang et al., IEEE TIP 2021).

    The objective is a pair: an image ``x`` and a reference embedding ``r`` (usually of another photo of
    the same person), scored by ``s = cos(f(x), r)``. For every layer with activations ``A`` (N, C, h, w)::

        map = ReLU( sum_c ReLU(+-ds/dA_c) * A'_c )      + for supports_match, - for opposes_match

    with ``A'`` = ``A`` after ``negative_activations`` (``relu``, ``abs`` or ``keep``). All layers come
    from one forward and one backward pass (:func:`leam.core.leam_maps`); each map is placed on the model
    input grid by ``placement`` (:mod:`leam.placement`): ``receptive_field`` puts each cell at the centre
    of its traced receptive field, ``effective_field`` where its input gradients sit on the real faces of
    ``probe_images``, ``centred`` is LayerCAM's bilinear upsampling. Geometries are computed once per
    model, layers and placement (``leam.placement.cached_geometries``; for ``effective_field`` the first
    probe of a model counts).

    Args:
        model: an ``nn.Module`` in eval mode with frozen parameters, RGB 0..255 (N, 3, s, s) -> (N, D).
        layers: submodule names (``model.get_submodule(name)``) whose outputs are (N, C, h, w).
        sign: ``supports_match`` (what makes x look like r) or ``opposes_match``.
        negative_activations: ``relu``, ``abs`` or ``keep``.
        placement: ``receptive_field``, ``effective_field`` or ``centred``.
        objective: ``cosine`` (the only one; named so the objective is visible where LEAM is set up).
        probe_images: (N, 3, s, s) real faces in the model input, RGB 0..255; needed by ``effective_field``.

    Calling it with ``images`` (N, 3, s, s) in the model's input geometry and ``references`` (N, D) (or
    one (D,) reference for all) returns :class:`leam.core.LeamMaps`: ``maps`` (N, L, s, s) raw,
    non-negative, not display-normalised, layers in the order given; ``cosine`` (N,) of each clean pair.

    Example::

        >>> import torch, leam
        >>> from leam.models import iresnet
        >>> model = iresnet.build("iresnet18")               # random weights; any frozen nn.Module works
        >>> cam = leam.LEAM(model, ["layer2.1", "layer4.1"])
        >>> images = torch.rand(2, 3, 112, 112) * 255
        >>> result = cam(images, cam.embed(images.flip(0)))  # explain image 0 against image 1 and back
        >>> result.maps.shape, result.cosine.shape
        (torch.Size([2, 2, 112, 112]), torch.Size([2]))
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], sign: str = "supports_match",
                 negative_activations: str = "keep", placement: str = "receptive_field",
                 objective: str = "cosine", probe_images: torch.Tensor | None = None) -> None:
        check_choice("objective", objective, OBJECTIVES)
        check_choice("sign", sign, SIGNS)
        check_choice("negative_activations", negative_activations, NEGATIVE_ACTIVATIONS)
        check_choice("placement", placement, PLACEMENTS)
        if not isinstance(model, nn.Module):
            raise LeamError(f"LEAM needs a torch nn.Module, got {type(model).__name__}")
        check_model(model)
        if placement == "effective_field" and probe_images is None:
            raise LeamError("placement='effective_field' needs probe_images: real faces (N, 3, s, s) in the model "
                            "input, on which each layer's cell positions are measured")
        self.model = model
        self.layers = _layer_names(model, layers, "LEAM")
        self.sign = sign
        self.negative_activations = negative_activations
        self.placement = placement
        self.objective = objective
        self.probe_images = None if probe_images is None else torch.as_tensor(probe_images, dtype=torch.float32)
        self.spec: ModelSpec | None = None  # the registry entry, when built by from_registry

    @classmethod
    def from_registry(cls, name: str, weights_dir: str | Path = "data/models", layers: Sequence[str] | None = None,
                      **options) -> LEAM:
        """LEAM on a registered model (``leam.models.registry``), loaded from ``weights_dir``.

        ``layers`` None means the model's default LEAM layers (``ModelSpec.layers``); ``options`` are
        ``sign``, ``negative_activations``, ``placement``, ``objective`` and ``probe_images``.
        """
        spec = get_spec(name)
        model = spec.load(Path(weights_dir))
        cam = cls(model, resolve_layers(spec, model, list(layers) if layers else None), **options)
        cam.spec = spec
        return cam

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of ``images`` (N, 3, s, s), e.g. to use as references; no gradients."""
        with torch.no_grad():
            return self.model(torch.as_tensor(images, dtype=torch.float32))

    def __call__(self, images: torch.Tensor, references: torch.Tensor) -> LeamMaps:
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise LeamError(f"expected square images (N, 3, s, s), got {tuple(images.shape)}")
        references = torch.as_tensor(references, dtype=images.dtype, device=images.device)
        if references.ndim == 1:
            references = references.expand(images.shape[0], -1)
        geometries = cached_geometries(self.model, self.layers, int(images.shape[-1]), self.placement,
                                       self.probe_images)
        return leam_maps(self.model, images, references, self.layers, self.sign, self.negative_activations,
                         geometries)

    def __repr__(self) -> str:
        return (f"LEAM({type(self.model).__name__}, layers={list(self.layers)}, sign={self.sign!r}, "
                f"negative_activations={self.negative_activations!r}, placement={self.placement!r}, "
                f"objective={self.objective!r})")


def register_model(name: str, module_or_loader: nn.Module | Callable[[Path], nn.Module], *, input_size: int,
                   embedding_dim: int, layers: Sequence[str], input_warp: str | InputWarp = "arcface",
                   description: str = "", verification_threshold: float | None = None,
                   replace: bool = False) -> ModelSpec:
    """Register your own face-embedding ``nn.Module`` so it is used like the built-in models.

    module_or_loader: the module itself, or ``loader(weights_dir) -> nn.Module``. The module must take
    RGB 0..255 (N, 3, input_size, input_size), normalise internally, and return (N, embedding_dim); it is
    put in eval mode with frozen parameters when loaded (the contract of :mod:`leam.models.spec`).
    layers: default LEAM layers, shallow to deep (submodule names).
    input_warp: how the analysis frame maps to the model input: ``arcface`` (the 5-point fit onto
    InsightFace's template, scaled to ``input_size``; :func:`leam.geometry.arcface_input_warp`) or a
    callable ``(landmarks (N, 68, 2), frame_size, frame_padding) -> (N, 2, 3)`` frame -> input matrices.
    replace: replace an earlier registration of ``name`` (e.g. when a notebook cell runs again).
    Returns the registered :class:`~leam.models.spec.ModelSpec` (``leam.models.registry.get_spec(name)``).
    """
    if not isinstance(name, str) or not name:
        raise LeamError(f"register_model: name must be a non-empty string, got {name!r}")
    for key, value in (("input_size", input_size), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LeamError(f"register_model: {key}={value!r} is not valid; it must be a positive integer")
    if isinstance(input_warp, str):
        check_choice("register_model input_warp", input_warp, ("arcface",))
        warp: InputWarp = partial(arcface_input_warp, size=input_size)
    elif callable(input_warp):
        warp = input_warp
    else:
        raise LeamError(f"register_model: input_warp must be 'arcface' or a callable, got {type(input_warp).__name__}")
    if isinstance(module_or_loader, nn.Module):
        module = module_or_loader
        names = _layer_names(module, layers, f"register_model({name!r})")

        def load(weights_dir: Path) -> nn.Module:
            return module.eval().requires_grad_(False)
    elif callable(module_or_loader):
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names:
            raise LeamError(f"register_model({name!r}): no layers given")
        loader = module_or_loader

        def load(weights_dir: Path) -> nn.Module:
            loaded = loader(Path(weights_dir))
            if not isinstance(loaded, nn.Module):
                raise LeamError(f"the loader of model {name!r} returned {type(loaded).__name__}, not an nn.Module")
            return loaded.eval().requires_grad_(False)
    else:
        raise LeamError(f"register_model: module_or_loader must be an nn.Module or a loader function, "
                        f"got {type(module_or_loader).__name__}")
    spec = ModelSpec(name=name, description=description or f"user model {name}", input_size=input_size,
                     embedding_dim=embedding_dim, layers=names, load=load, input_warp=warp,
                     verification_threshold=verification_threshold)
    try:
        return register(spec, replace=replace)
    except ValueError:
        raise LeamError(f"model {name!r} is already registered; pass replace=True to replace it, or choose "
                        f"another name") from None
