"""Your own networks from ``model_zoo``: an IResNet checkpoint or an ONNX, TFLite or TF.js graph file.

Why: LEAM is meant for the networks its users study, not only the ones we ship. An entry names the file
(local path or URL, with its sha256, checked before it is read), its ``format`` and how the network wants
its input (``input_size``, ``channel_order``, ``mean`` and ``std`` in 0..255 pixel units, the ArcFace
5-point crop). Graph files go through the same importers and compiler as the built-in networks
(:mod:`leam.models.onnx_import`, :mod:`leam.models.tflite_import`, :mod:`leam.models.tfjs_import`,
:mod:`leam.models.compile`).

Default LEAM layers of a graph (``layers`` empty) are chosen on its own shapes: for every spatial
resolution its 4-D values pass through, shallow to deep, the last value computed at that resolution (a
stage's output), named ``res<h>x<w>``. Layers given by hand are graph value names. A file whose output is
not (N, ``embedding_dim``) is one LeamError at load time.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from leam.errors import LeamError
from leam.geometry import arcface_input_warp
from leam.models import iresnet
from leam.models.spec import ModelSpec
from leam.models.weights import local_file, verify_sha256

__all__ = ["GRAPH_FORMATS", "FORMATS", "default_layers_of", "resolution_taps", "zoo_spec"]

GRAPH_FORMATS = ("onnx", "tflite", "tfjs")
FORMATS = ("arcface_torch", *GRAPH_FORMATS)
_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "tfjs": ".json"}


def resolution_taps(graph, input_size: int) -> dict[str, str]:
    """``{"res<h>x<w>": value}``: the last 4-D value at each spatial resolution (> 1 x 1), shallow to deep."""
    last: dict[tuple[int, int], str] = {}
    for name, shape in list(graph.value_shapes(input_size).items())[1:]:  # not the input itself
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            last.pop(shape[2:], None)  # re-inserted: dict order = order in which each resolution last appears
            last[shape[2:]] = name
    ordered = sorted(last.items(), key=lambda item: -item[0][0] * item[0][1])
    return {f"res{h}x{w}": value for (h, w), value in ordered}


def _load_graph(name: str, entry: Mapping[str, Any], weights_dir: Path, compiled: bool = True) -> nn.Module:
    from leam.models import graph as g
    from leam.models.compile import compile_graph

    fmt, size = entry["format"], int(entry["input_size"])
    path = local_file(str(entry["path_or_url"]), Path(weights_dir) / "zoo" / f"{name}{_SUFFIX[fmt]}",
                      f"file for model {name!r}", f"model_zoo.{name}.path_or_url")
    verify_sha256(path, str(entry["sha256"]), expected_by=f"model_zoo.{name}.sha256 is")
    normalisation = g.PixelNormalisation(entry.get("channel_order", "RGB"), _pixels(entry.get("mean", 127.5)),
                                         _pixels(entry.get("std", 128.0)))
    output = entry.get("output") or None
    if fmt == "onnx":
        from leam.models.onnx_import import load_onnx
        graph = load_onnx(path, normalisation, output=output)
    elif fmt == "tflite":
        from leam.models.tflite_import import load_tflite
        graph = load_tflite(path, normalisation, output=output)
    else:
        from leam.models.tfjs_import import load_tfjs
        if not output:
            raise LeamError(f"model_zoo.{name}.output must name the embedding node of the TF.js graph")
        graph = load_tfjs(path, output)
        graph.normalise, graph.normalisation = normalisation.module(), normalisation
    layers = list(entry.get("layers") or [])
    taps = resolution_taps(graph, size) if not layers else {_tap_name(v): v for v in layers}
    graph = g.GraphModule(dict(graph.ops), graph.nodes, graph.input_name, graph.output_name, normalisation, taps,
                          f"{fmt} file {path.name}")
    with torch.no_grad():
        probe = graph(torch.full((2, 3, size, size), 127.5))
    dim = entry.get("embedding_dim")
    if probe.ndim != 2 or (dim and probe.shape[1] != int(dim)):
        raise LeamError(f"model_zoo.{name}: the network's output is {tuple(probe.shape)} for a batch of 2, expected "
                        f"(N, {dim or 'D'}); set model_zoo.{name}.output to the embedding value")
    return compile_graph(graph, size) if compiled else graph


def _tap_name(value: str) -> str:
    """The LEAM layer name of a hand-named graph value (a Python identifier)."""
    from leam.models.graph import unique_key

    return unique_key(value, set(), "layer")


def _pixels(value):
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)


def zoo_spec(name: str, entry: Mapping[str, Any]) -> ModelSpec:
    """A registry spec for one validated ``model_zoo`` entry (``leam.config.ZooEntry`` as a mapping)."""
    fmt = entry.get("format", "arcface_torch")
    if fmt == "arcface_torch":
        return iresnet.checkpoint_spec(name, str(entry.get("arch")), str(entry.get("path_or_url", "")),
                                       str(entry.get("sha256", "")), entry.get("layers"))
    if fmt not in GRAPH_FORMATS:
        raise LeamError(f"model_zoo.{name}.format={fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    size = int(entry.get("input_size", 112))
    layers = tuple(entry.get("layers") or ())
    return ModelSpec(
        name=name, description=f"{fmt} file {entry.get('path_or_url')} (model_zoo)", input_size=size,
        embedding_dim=int(entry.get("embedding_dim") or 0),
        layers=tuple(_tap_name(v) for v in layers),  # empty: chosen on the file's shapes when it loads
        load=partial(_load_graph, name, dict(entry)),
        input_warp=partial(arcface_input_warp, size=size),
    )


def default_layers_of(spec: ModelSpec, model: nn.Module) -> list[str]:
    """The spec's default layers; a graph whose defaults are chosen when it loads has none, and its taps are."""
    return list(spec.layers) or list(getattr(model, "taps", None) or ())
