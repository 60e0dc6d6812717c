"""Model registry: one name -> everything LEAM, occlusion and verification need to use a network.

In the shape of arcface_torch's ``get_model``: this module imports the model families, and each family
only *describes* its networks (a ``SPECS`` mapping name -> :class:`leam.models.spec.ModelSpec`) without
importing the registry back, so there is no import cycle. What gets registered, and when:

- the built-in networks (``FAMILIES``' ``SPECS``): when this module is first imported;
- user IResNet checkpoints of ``params.yaml``'s ``model_zoo``: only by an explicit
  ``register_zoo(config.model_zoo)``, which every stage that loads models calls with its validated config;
- any other ``nn.Module``: ``leam.register_model`` (:mod:`leam.api`), which builds a spec and calls
  :func:`register`.

The contract every registered module meets is in :mod:`leam.models.spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from leam.errors import LeamError
from leam.models import dlib_resnet, human_models, iresnet, npm_models
from leam.models import zoo as user_networks
from leam.models.spec import ModelSpec

__all__ = ["FAMILIES", "ModelSpec", "available_models", "describe_models", "get_spec", "layer_shapes", "register",
           "register_zoo", "resolve_layers"]

FAMILIES = (dlib_resnet, human_models, npm_models, iresnet)
"""Built-in model families; each exposes ``SPECS`` (name -> ModelSpec) and imports nothing from here."""


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Make ``spec`` available under ``spec.name``; a second spec of the same name needs ``replace=True``."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model {spec.name!r} registered twice (pass replace=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise LeamError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def register_zoo(zoo: Mapping[str, Any]) -> list[str]:
    """Register every entry of the validated ``model_zoo`` (``leam.config.Config.model_zoo``); returns new names.

    Entries are ``leam.config.ZooEntry`` objects or plain mappings (``format``, ``arch`` for IResNets,
    ``path_or_url``, ``sha256``, the input spec, optional ``layers``), built by :func:`leam.models.zoo.zoo_spec`. Stages
    that load models call this explicitly with their config; nothing is read from ``params.yaml`` here.
    Re-registering the same entry is a no-op; a different one under a taken name is an error.
    """
    if not isinstance(zoo, Mapping):
        raise LeamError("model_zoo must map model names to {arch, path_or_url, sha256}")
    names = []
    for name, entry in zoo.items():
        if hasattr(entry, "model_dump"):  # a validated leam.config.ZooEntry (duck-typed: no import of the config)
            entry = entry.model_dump()
        if not isinstance(entry, Mapping) or not ("arch" in entry or entry.get("format") in user_networks.FORMATS):
            raise LeamError(f"model_zoo.{name} must be a mapping with a format ({', '.join(user_networks.FORMATS)}) "
                            "or an arch, and its file (path_or_url, sha256) or builder")
        spec = user_networks.zoo_spec(str(name), entry)
        if name in _REGISTRY:
            if _REGISTRY[name].description != spec.description:
                raise LeamError(f"model {name!r} is already registered as {_REGISTRY[name].description!r}")
            continue
        register(spec)
        names.append(str(name))
    return names


def resolve_layers(spec: ModelSpec, model: nn.Module, layers: list[str] | None) -> list[str]:
    """Check requested layer names against the module; None means the spec's defaults."""
    names = list(layers) if layers else user_networks.default_layers_of(spec, model)
    known = dict(model.named_modules())
    bad = [name for name in names if name not in known]
    if bad:
        raise LeamError(
            f"unknown layer(s) {', '.join(map(repr, bad))} for model {spec.name!r}; "
            f"default layers: {', '.join(spec.layers)} (see `python -m stages.models --list`)"
        )
    return names


def _register_builtin() -> None:
    """Register every family's ``SPECS``; runs once, when this module is first imported."""
    for family in FAMILIES:
        for spec in family.SPECS.values():
            register(spec)


_register_builtin()


def layer_shapes(model: nn.Module, layers, input_size: int) -> dict[str, tuple[int, ...]]:
    """Output shape (C, h, w) of each named layer for a grey input (``leam.models.zoo.module_output_shapes``)."""
    shapes = user_networks.module_output_shapes(model, layers, input_size)
    return {name: shapes[name] for name in layers if name in shapes}


def describe_models(weights_dir) -> list[str]:
    """Lines describing every registered model and its default LEAM layers, with their shapes where the
    weights load (``--list`` of the models and leam stages)."""
    lines = []
    for name in available_models():
        spec = get_spec(name)
        lines.append(f"{name}: input {spec.input_size}x{spec.input_size}, embedding {spec.embedding_dim}"
                     f" - {spec.description}")
        try:
            model = spec.load(weights_dir)
        except LeamError as exc:
            lines.append(f"  layers: {', '.join(spec.layers) or 'chosen when the file loads'} "
                         f"(shapes need weights: {exc})")
            continue
        for layer, shape in layer_shapes(model, resolve_layers(spec, model, None), spec.input_size).items():
            lines.append(f"  {layer:<12} {'x'.join(map(str, shape))}")
    return lines
