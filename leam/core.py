"""LEAM (Layer Embedding Activation Mapping): LayerCAM for face-embedding networks.

The objective is a *pair*: an image ``x`` and a reference embedding ``r`` (usually another photo of the
same person). Its score is the cosine similarity ``s = cos(f(x), r)``; the paper writes the loss as
``L = 1 - s``. For every selected layer with activations ``A`` (N, C, h, w)::

    weight = ReLU(+ds/dA)   sign="supports_match"  (= -dL/dA: what makes x look like r)
    weight = ReLU(-ds/dA)   sign="opposes_match"   (what pulls x away from r)
    map    = ReLU(sum_c weight_c * A'_c)            (N, h, w)

``A'`` is ``A`` after ``negative_activations``: ``keep`` (default, LayerCAM as published: the raw, possibly
signed activations; the outer ReLU drops pixels whose signed sum is negative), ``relu`` (only positive
evidence counts) or ``abs`` (a strongly negative response is evidence too). They differ only on layers
whose outputs can be negative (IResNet blocks and MobileFace's layers end without a ReLU).

``r`` must not be ``f(x)`` itself: ``cos(e, e)`` is 1 for every ``e``, so its gradient is zero.

How it is computed (all layers from one forward and one backward pass):
- forward hooks capture each selected layer's output and hand the network a *clone*, so an in-place op
  later in the network (``out += identity`` in a residual block) can never change the captured tensor;
- the first selected layer the forward reaches becomes a detached leaf that requires grad; the input and
  the (frozen) parameters do not, so no graph is built before it and the backward pass stops there;
- ``torch.autograd.grad`` of the summed scores w.r.t. the list of captured activations gives every
  layer's gradient at once. Samples are independent (eval mode), and a pass of fewer than 16 images is
  padded to 16 (``leam.device.pad_rows``: CPU kernels change with the row count below that), so batching
  does not change a map, not even in the last bit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.device import forward_bytes, module_device, pad_rows
from leam.embedding import to_model_input
from leam.errors import LeamError, check_choice
from leam.frame import input_to_frame
from leam.models.registry import ModelSpec
from leam.placement import CellGeometry, cached_geometries, place_on_input

SIGNS = ("supports_match", "opposes_match")
NEGATIVE_ACTIVATIONS = ("relu", "abs", "keep")
REFERENCES = ("baseline", "mean_others", "pairs")
OVERALL = ("mean_normalised",)


@dataclass(frozen=True)
class LeamMaps:
    """Raw LEAM maps of a batch of (image, reference) pairs.

    maps: (N, L, H, W) float32, non-negative, not display-normalised; H = W = the model input size
    (from :func:`leam_maps`) or the analysis frame size (from :func:`frame_leam_maps`).
    cosine: (N,) cosine similarity of each clean pair (the objective whose gradient made the maps).
    """

    maps: torch.Tensor
    cosine: torch.Tensor
    layers: tuple[str, ...]


def cosine_objective(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-pair score ``s = cos(embedding, reference)``: (N, D), (N, D) -> (N,)."""
    return F.cosine_similarity(embeddings, references, dim=1)


def layer_map(activation: torch.Tensor, gradient: torch.Tensor, sign: str = "supports_match",
              negative_activations: str = "keep") -> torch.Tensor:
    """The LEAM formula for one layer: (N, C, h, w) activations and ds/dA -> (N, h, w) map."""
    check_choice("leam.sign", sign, SIGNS)
    check_choice("leam.negative_activations", negative_activations, NEGATIVE_ACTIVATIONS)
    if negative_activations == "relu":
        activation = F.relu(activation)
    elif negative_activations == "abs":
        activation = activation.abs()
    weight = F.relu(gradient if sign == "supports_match" else -gradient)
    return F.relu((weight * activation).sum(dim=1))


def check_model(model: nn.Module) -> None:
    """The registry contract LEAM relies on: eval mode (independent samples) and frozen parameters."""
    if model.training or any(p.requires_grad for p in model.parameters()):
        raise LeamError("the model must be in eval mode with frozen parameters "
                        "(model.eval().requires_grad_(False), as ModelSpec.load returns it)")


@contextlib.contextmanager
def _captured(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store each layer's output (see the module docstring) in the yielded dict."""
    modules = dict(model.named_modules())
    bad = [name for name in layers if name not in modules]
    if bad:
        raise LeamError(f"unknown layer(s) {', '.join(map(repr, bad))}; the model has e.g. "
                        f"{', '.join(list(modules)[1:6])} (see `python -m stages.leam --list`)")
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise LeamError(f"layer {name!r} must output an (N, C, h, w) tensor, got {shape}")
            if name in store:
                raise LeamError(f"layer {name!r} runs more than once per forward pass; choose another layer")
            if not output.requires_grad:
                # Nothing selected lies upstream: start the graph here, so backprop stops here.
                output = output.detach().requires_grad_(True)
            store[name] = output
            return output.clone()  # later in-place ops mutate the clone, never the captured tensor
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def leam_maps(model: nn.Module, images: torch.Tensor, references: torch.Tensor, layers: Sequence[str],
              sign: str = "supports_match", negative_activations: str = "keep",
              geometries: Mapping[str, CellGeometry] | None = None) -> LeamMaps:
    """LEAM maps of every layer on the model input grid from one forward and one backward pass.

    images: (N, 3, s, s) float RGB 0..255, already in the model's input geometry.
    references: (N, D) reference embeddings (treated as constants).
    geometries: where each layer's cells sit in the input (``leam.placement``); None = LayerCAM's centred
    upsampling (``F.interpolate``, bilinear, ``align_corners=False``).
    Returns maps (N, L, s, s), each layer's map resampled bilinearly to the input size, and the cosine.
    """
    check_choice("leam.sign", sign, SIGNS)
    check_choice("leam.negative_activations", negative_activations, NEGATIVE_ACTIVATIONS)
    check_model(model)
    layers = tuple(layers)
    if not layers:
        raise LeamError("no LEAM layers selected")
    if len(set(layers)) != len(layers):
        raise LeamError(f"LEAM layers repeat: {', '.join(layers)}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise LeamError(f"expected a non-empty image batch (N, 3, s, s), got {tuple(images.shape)}")
    references = torch.as_tensor(references, dtype=images.dtype, device=images.device).detach()
    if references.ndim != 2 or references.shape[0] != images.shape[0]:
        raise LeamError(f"references must be (N, D) with N = {images.shape[0]} images, got {tuple(references.shape)}")
    size = images.shape[-2:]
    (images, references), count = pad_rows((images, references))  # batch-size invariant maps (leam.device)
    with torch.enable_grad(), _captured(model, layers) as store:
        embeddings = model(images.detach())
        if embeddings.ndim != 2 or embeddings.shape[1] != references.shape[1]:
            raise LeamError(f"references are {references.shape[1]}-D but the model embeds to {tuple(embeddings.shape)}")
        cosine = cosine_objective(embeddings, references)
        missing = [name for name in layers if name not in store]
        if missing:
            raise LeamError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
        captured = [store[name] for name in layers]
        gradients = torch.autograd.grad(cosine.sum(), captured, allow_unused=True)
    maps = []
    for name, activation, gradient in zip(layers, captured, gradients):
        if gradient is None:
            raise LeamError(f"layer {name!r} does not influence the embedding; choose another layer")
        layer = layer_map(activation.detach(), gradient, sign, negative_activations)
        if geometries is not None:
            layer = place_on_input(layer, geometries[name])
        elif layer.shape[-2:] != size:
            layer = F.interpolate(layer[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        maps.append(layer[:count])
    return LeamMaps(maps=torch.stack(maps, dim=1), cosine=cosine.detach()[:count], layers=layers)


def frame_leam_maps(model: nn.Module, spec: ModelSpec, frames: np.ndarray, landmarks: np.ndarray,
                    references: torch.Tensor, layers: Sequence[str], frame_padding: float,
                    sign: str = "supports_match", negative_activations: str = "keep",
                    placement: str | Mapping[str, CellGeometry] | None = "receptive_field") -> LeamMaps:
    """LEAM maps in the analysis frame: frames (N, S, S, 3) uint8 -> maps (N, L, S, S) float32.

    The frames go to the model input through ``spec.input_warp`` and the maps come back through its
    inverse (``leam.frame.input_to_frame``); frame pixels the model never saw are 0. ``placement`` says
    where each coarse cell lands (:mod:`leam.placement`): the geometries :func:`frame_geometries` returns
    (a mapping per layer; None = ``centred``), or the name of a placement that needs no probe faces
    (``receptive_field``, ``centred``).
    """
    if isinstance(placement, str):
        if placement == "effective_field":
            raise LeamError("placement=effective_field is measured on probe faces: pass "
                            "core.frame_geometries(model, spec, layers, 'effective_field', frames, landmarks, padding)")
        placement = cached_geometries(model, layers, spec.input_size, placement)
    inputs, matrices = to_model_input(spec, frames, landmarks, frame_padding, module_device(model))
    result = leam_maps(model, inputs, references, layers, sign, negative_activations, placement)
    framed = input_to_frame(result.maps, matrices, int(np.asarray(frames).shape[1])).clamp_min_(0.0)
    return LeamMaps(maps=framed, cosine=result.cosine, layers=result.layers)


def frame_geometries(model: nn.Module, spec: ModelSpec, layers: Sequence[str], placement: str,
                     probe_frames: np.ndarray, probe_landmarks: np.ndarray, frame_padding: float
                     ) -> dict[str, CellGeometry] | None:
    """Cell geometries for ``leam.placement``; ``effective_field`` measures them on these probe frames
    (N, S, S, 3) uint8 seen through the model's own warp. None = ``centred`` (LayerCAM's upsampling)."""
    probe = None
    if placement == "effective_field":
        probe = to_model_input(spec, probe_frames, probe_landmarks, frame_padding, module_device(model))[0]
    return cached_geometries(model, layers, spec.input_size, placement, probe)


def pass_bytes(model: nn.Module, spec: ModelSpec, layers: Sequence[str], frame_size: int) -> int:
    """Estimated bytes one photo needs in a :func:`frame_leam_maps` pass, for ``leam.batch_size: auto``.

    Three times the network's per-photo layer outputs (:func:`leam.device.forward_bytes`: the activations
    autograd keeps, their gradients, the captured clones) plus four float32 copies of its L maps in the
    analysis frame (S x S): on the input grid, warped, stacked and downsampled.
    """
    return 3 * forward_bytes(model, spec.input_size) + 4 * 4 * (len(layers) + 1) * frame_size * frame_size


def area_downsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, L, S, S) -> (N, L, size, size) by area averaging (keeps each map's mass per area)."""
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="area")


def overall_map(maps: torch.Tensor, policy: str = "mean_normalised") -> torch.Tensor:
    """One summary map per image from (N, L, H, W) per-layer maps -> (N, H, W).

    ``mean_normalised``: each layer's map divided by its own maximum (an all-zero map stays zero), then
    averaged over layers, so every resolution weighs the same whatever its raw scale.
    """
    check_choice("leam.overall", policy, OVERALL)
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    normalised = torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
    return normalised.mean(dim=1)


def select_references(index: pd.DataFrame, mode: str = "baseline", baseline_index: int = 0,
                      pairs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Choose each image's reference: which objective (image, reference) LEAM explains.

    index: the aligned index (columns ``image_id, identity``; row order = the arrays' rows).
    Returns ``(plan, dropped)``: ``plan`` has one row per kept image, in index order, with ``row`` (the
    image's row), ``reference_image_id`` and ``reference_rows`` (list of rows whose mean normalised
    embedding is the reference, :func:`leam.embedding.reference_embeddings`); ``dropped`` counts images
    without a possible reference by reason.

    - ``baseline``: the identity's ``baseline_index``-th image (index order); the baseline image itself
      uses the next image of its identity (wrapping around).
    - ``mean_others``: mean of the identity's other images' L2-normalised embeddings
      (``reference_image_id`` = ``mean_others``).
    - ``pairs``: explicit (image_id, reference_image_id) rows; references may be any kept image.
    Identities with a single kept image (or ``pairs`` rows naming unknown images / the image itself) are dropped.
    """
    check_choice("leam.reference", mode, REFERENCES)
    for column in ("image_id", "identity"):
        if column not in index.columns:
            raise LeamError(f"aligned index lacks column {column!r}")
    index = index.reset_index(drop=True)
    rows_by_id = {image_id: row for row, image_id in enumerate(index.image_id)}
    dropped: dict[str, int] = {}
    plan: list[dict] = []

    def drop(reason: str, count: int = 1) -> None:
        dropped[reason] = dropped.get(reason, 0) + count

    if mode == "pairs":
        if pairs is None or not {"image_id", "reference_image_id"} <= set(pairs.columns):
            raise LeamError("leam.reference=pairs needs leam.pairs_file with columns image_id, reference_image_id")
        wanted = dict(zip(pairs.image_id.astype(str), pairs.reference_image_id.astype(str)))
        for row, image_id in enumerate(index.image_id):
            reference = wanted.get(image_id)
            if reference is None:
                drop("not_in_pairs")
            elif reference == image_id:
                drop("self_reference")
            elif reference not in rows_by_id:
                drop("reference_missing")
            else:
                plan.append({"row": row, "reference_image_id": reference, "reference_rows": [rows_by_id[reference]]})
        unknown = len(set(wanted) - set(rows_by_id))
        if unknown:
            drop("pair_image_missing", unknown)
    else:
        if baseline_index < 0:
            raise LeamError(f"leam.baseline_index must be >= 0, got {baseline_index}")
        members = index.groupby("identity", sort=False).indices
        for row, identity in enumerate(index.identity):
            group = list(members[identity])
            if len(group) < 2:
                drop("single_image_identity")
                continue
            if mode == "mean_others":
                plan.append({"row": row, "reference_image_id": "mean_others",
                             "reference_rows": [other for other in group if other != row]})
                continue
            if baseline_index >= len(group):
                drop("no_baseline_image")
                continue
            position = baseline_index if group[baseline_index] != row else (baseline_index + 1) % len(group)
            plan.append({"row": row, "reference_image_id": index.image_id[group[position]],
                         "reference_rows": [group[position]]})
    columns = ["row", "reference_image_id", "reference_rows"]
    return pd.DataFrame(plan, columns=columns), dropped
