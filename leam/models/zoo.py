"""Your own networks from ``model_zoo``: an IResNet checkpoint (arcface_torch, or face.evoLVe / AdaFace IR),
an ONNX, TFLite, TF.js or TorchScript file, or a Python builder of any ``nn.Module``.

Why: LEAM is meant for the networks its users study, not only the ones we ship. An entry names the file
(local path or URL, with its sha256, checked before it is read), its ``format`` and how the network wants
its input (``input_size``, ``channel_order``, ``mean`` and ``std`` in 0..255 pixel units, the ArcFace
5-point crop). Graph files go through the same importers and compiler as the built-in networks
(:mod:`leam.models.onnx_import`, :mod:`leam.models.tflite_import`, :mod:`leam.models.tfjs_import`,
:mod:`leam.models.compile`).

TorchScript modules take no forward hooks (``register_forward_hook is not supported on ScriptModules``),
so a TorchScript file is exported once to ONNX with torch's TorchScript exporter (cached beside the file)
and imported like an ONNX file; its value names carry the module path (``/layer1/layer1.0/Add_output_0``).
Its reference runtime is ``torch.jit`` itself (tests/test_zoo.py). A ``python`` entry imports
``builder`` (``package.module:function``), calls it, optionally loads a state dict (strictly), and
normalises the input in a forward pre-hook, so its layer names are the module's own submodule names. An
``evolve_ir`` entry is a face.evoLVe / AdaFace / CVLface IR or IR-SE state dict (plain or a Lightning
``.ckpt``), whose network is read from its own keys and shapes (:mod:`leam.models.evolve_ir`); its layer
names are the state dict's module paths (``input_layer``, ``body.<k>``) and its default layers
``input_layer`` plus each stage's last block.

Default LEAM layers (``layers`` empty) are chosen on the network's own shapes: for every spatial
resolution its 4-D values pass through, shallow to deep, the last value computed at that resolution (a
stage's output). Graphs name them ``res<h>x<w>``; Python modules keep the submodule's name (the last
submodule to finish at that resolution). A network whose output is not (N, ``embedding_dim``) is one
LeamError at load time.
"""

from __future__ import annotations

import importlib
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from leam.errors import LeamError
from leam.frame import dlib_chip_matrix
from leam.geometry import arcface_input_warp
from leam.models import evolve_ir, iresnet
from leam.models.spec import ModelSpec
from leam.models.weights import local_file, verify_sha256

__all__ = ["GRAPH_FORMATS", "FORMATS", "default_layers_of", "frame_input_warp", "module_output_shapes",
           "module_resolution_layers", "resolution_taps", "zoo_spec"]

GRAPH_FORMATS = ("onnx", "tflite", "tfjs", "torchscript")
FORMATS = ("arcface_torch", "evolve_ir", *GRAPH_FORMATS, "python")
_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "tfjs": ".json", "torchscript": ".pt", "python": ".pth"}
_DEFAULT_LAYERS = "leam_default_layers"  # attribute of a loaded python/evolve_ir module: its chosen layers
_NORMALISE = "leam_normalise"  # submodule added to a python-format module: 0..255 RGB -> its input convention


def resolution_taps(graph, input_size: int) -> dict[str, str]:
    """``{"res<h>x<w>": value}``: the last 4-D value at each spatial resolution (> 1 x 1), shallow to deep."""
    last: dict[tuple[int, int], str] = {}
    for name, shape in list(graph.value_shapes(input_size).items())[1:]:  # not the input itself
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            last.pop(shape[2:], None)  # re-inserted: dict order = order in which each resolution last appears
            last[shape[2:]] = name
    ordered = sorted(last.items(), key=lambda item: -item[0][0] * item[0][1])
    return {f"res{h}x{w}": value for (h, w), value in ordered}


def module_output_shapes(module: nn.Module, names, input_size: int) -> dict[str, tuple[int, ...]]:
    """Output shape (C, h, w) of each named submodule for a grey (2, 3, ``input_size``, ``input_size``) batch,
    in the order the outputs were last produced (forward hooks, removed afterwards)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                shapes.pop(name, None)  # re-inserted: order = when each module last finished
                shapes[name] = tuple(output.shape[1:])
        return hook

    handles = [module.get_submodule(name).register_forward_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            module(torch.full((2, 3, input_size, input_size), 127.5))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def module_resolution_layers(module: nn.Module, input_size: int) -> list[str]:
    """Submodule names of an ``nn.Module``: the last to finish at each spatial resolution (> 1 x 1), shallow
    to deep (in-place modules, whose output is someone else's tensor, and the input normaliser are skipped)."""
    names = [name for name, sub in module.named_modules()
             if name and not name.startswith(_NORMALISE) and not getattr(sub, "inplace", False)]
    last: dict[tuple[int, int], str] = {}
    for name, shape in module_output_shapes(module, names, input_size).items():
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            last.pop(shape[1:], None)
            last[shape[1:]] = name
    ordered = sorted(last.items(), key=lambda item: -item[0][0] * item[0][1])
    return [name for _, name in ordered]


def _check_output(name: str, model: nn.Module, size: int, dim) -> None:
    """One LeamError unless the network maps a batch of 2 to (2, ``dim``)."""
    with torch.no_grad():
        probe = model(torch.full((2, 3, size, size), 127.5))
    shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
    if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or (dim and probe.shape[1] != int(dim)):
        raise LeamError(f"model_zoo.{name}: the network's output is {shape} for a batch of 2, expected "
                        f"(2, {dim or 'D'}); set model_zoo.{name}.output to the embedding value (graph formats) "
                        "or return the embedding (python)")


def _torchscript_to_onnx(name: str, path: Path, sha256: str, size: int) -> Path:
    """Export a (checksum-verified) TorchScript file once to ONNX beside it, keyed by its sha256."""
    target = path.with_name(f"{path.stem}.{sha256[:16]}.{size}.onnx")
    if target.is_file():
        return target
    try:
        script = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - torch.jit raises RuntimeError or ValueError for a damaged file
        raise LeamError(f"model_zoo.{name}: {path.name} is not a readable TorchScript file "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    partial_target = target.with_name(target.name + ".partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices; the export itself is checked below
        try:
            torch.onnx.export(script, (torch.zeros(1, 3, size, size),), str(partial_target), dynamo=False,
                              input_names=["input"], output_names=["embedding"], opset_version=17,
                              dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types for unsupported graphs
            raise LeamError(f"model_zoo.{name}: {path.name} could not be exported to ONNX for LEAM "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    partial_target.replace(target)
    return target


def _load_graph(name: str, entry: Mapping[str, Any], weights_dir: Path, compiled: bool = True) -> nn.Module:
    from leam.models import graph as g
    from leam.models.compile import compile_graph

    fmt, size = entry["format"], int(entry["input_size"])
    path = local_file(str(entry["path_or_url"]), Path(weights_dir) / "zoo" / f"{name}{_SUFFIX[fmt]}",
                      f"file for model {name!r}", f"model_zoo.{name}.path_or_url")
    verify_sha256(path, str(entry["sha256"]), expected_by=f"model_zoo.{name}.sha256 is")
    normalisation = _normalisation(entry)
    output = entry.get("output") or None
    if fmt in ("onnx", "torchscript"):
        from leam.models.onnx_import import load_onnx
        graph = load_onnx(path if fmt == "onnx" else _torchscript_to_onnx(name, path, str(entry["sha256"]), size), normalisation,
                          output=output)
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
    _check_output(name, graph, size, entry.get("embedding_dim"))
    return compile_graph(graph, size) if compiled else graph


def _load_python(name: str, entry: Mapping[str, Any], weights_dir: Path) -> nn.Module:
    """Build the module, load its optional state dict, normalise in a pre-hook and choose default layers."""
    module_name, _, function = str(entry["builder"]).partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise LeamError(f"model_zoo.{name}.builder={entry['builder']!r} cannot be imported ({exc})") from None
    if not callable(builder):
        raise LeamError(f"model_zoo.{name}.builder={entry['builder']!r} is not a function")
    model = builder()
    if not isinstance(model, nn.Module):
        raise LeamError(f"model_zoo.{name}.builder returned {type(model).__name__}, not a torch nn.Module")
    if entry.get("path_or_url"):
        path = local_file(str(entry["path_or_url"]), Path(weights_dir) / "zoo" / f"{name}.pth",
                          f"state dict for model {name!r}", f"model_zoo.{name}.path_or_url")
        verify_sha256(path, str(entry["sha256"]), expected_by=f"model_zoo.{name}.sha256 is")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:  # noqa: BLE001 - unpickling and key/shape mismatches raise several types
            raise LeamError(f"model_zoo.{name}: {path.name} does not load into the built module "
                            f"({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:160]})") from None
    model.add_module(_NORMALISE, _normalisation(entry).module())
    model.register_forward_pre_hook(lambda module, args: (getattr(module, _NORMALISE)(args[0]), *args[1:]))
    model.eval().requires_grad_(False)
    size = int(entry["input_size"])
    _check_output(name, model, size, entry.get("embedding_dim"))
    setattr(model, _DEFAULT_LAYERS, tuple(module_resolution_layers(model, size)))
    return model


def _load_evolve_ir(name: str, entry: Mapping[str, Any], weights_dir: Path) -> nn.Module:
    """Read the (checksum-verified) IR state dict into the network its keys describe; default layers =
    ``input_layer`` + each stage's last block (:func:`leam.models.evolve_ir.stage_layers`)."""
    path = local_file(str(entry["path_or_url"]), Path(weights_dir) / "zoo" / f"{name}.pth",
                      f"state dict for model {name!r}", f"model_zoo.{name}.path_or_url")
    verify_sha256(path, str(entry["sha256"]), expected_by=f"model_zoo.{name}.sha256 is")
    size = int(entry["input_size"])
    model = evolve_ir.load_evolve_ir(path, size, f"model_zoo.{name}", _normalisation(entry).module())
    _check_output(name, model, size, entry.get("embedding_dim"))
    setattr(model, _DEFAULT_LAYERS, tuple(evolve_ir.stage_layers(model)))
    return model


def _normalisation(entry: Mapping[str, Any]):
    """The entry's ``leam.models.graph.PixelNormalisation`` (RGB 0..255 -> the network's input convention)."""
    from leam.models import graph as g

    return g.PixelNormalisation(entry.get("channel_order", "RGB"), _pixels(entry.get("mean", 127.5)),
                                _pixels(entry.get("std", 128.0)))


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
    if fmt not in FORMATS:
        raise LeamError(f"model_zoo.{name}.format={fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    size = int(entry.get("input_size", 112))
    layers = tuple(entry.get("layers") or ())
    alignment = entry.get("alignment", "arcface")
    if alignment not in ("arcface", "frame"):
        raise LeamError(f"model_zoo.{name}.alignment={alignment!r} is not valid; choose one of: arcface, frame")
    python, modules = fmt == "python", fmt in ("python", "evolve_ir")  # modules: layers are submodule names
    source = entry.get("builder") if python else f"file {entry.get('path_or_url')}"
    loader = _load_python if python else _load_evolve_ir if modules else _load_graph
    return ModelSpec(
        name=name, description=f"{fmt} {source} (model_zoo)", input_size=size,
        embedding_dim=int(entry.get("embedding_dim") or 0),
        # empty: chosen on the network's own shapes when it loads
        layers=layers if modules else tuple(_tap_name(v) for v in layers),
        load=partial(loader, name, dict(entry)),
        input_warp=partial(arcface_input_warp if alignment == "arcface" else frame_input_warp, size=size),
    )


def frame_input_warp(landmarks68: np.ndarray, frame_size: int, frame_padding: float, size: int) -> np.ndarray:
    """(N, 2, 3) frame -> input matrices for ``alignment: frame``: the analysis frame (a dlib chip) resized to
    ``size`` x ``size`` (the same chip at another size, :func:`leam.frame.dlib_chip_matrix`)."""
    matrix = dlib_chip_matrix(frame_size, frame_padding, size, frame_padding)
    return np.broadcast_to(matrix, (len(landmarks68), 2, 3)).copy()


def default_layers_of(spec: ModelSpec, model: nn.Module) -> list[str]:
    """The spec's default layers; a graph whose defaults are chosen when it loads has none, and its taps are."""
    return list(spec.layers) or list(getattr(model, _DEFAULT_LAYERS, None) or getattr(model, "taps", None) or ())
