"""Read an ONNX face-recognition network into a frozen, hookable PyTorch module (:class:`GraphModule`).

The file is parsed with PyPI ``onnx`` (protobuf only; imported when a model is loaded) and every node becomes
one torch op of :mod:`leam.models.graph`, so LEAM can hook any intermediate value (``ops.<node name>``, or a
named tap). ``onnxruntime`` is the reference runtime the tests compare against.

Why not ``onnx2torch``: it imports ``torchvision`` at import time (for its NMS and RoIAlign converters), and
PyPI's torchvision does not import beside the CPU torch build this project pins (the same reason the FaRL
parser is an extra). The face networks need a dozen plain ops, translated here one function each.

Batch size: exporters often fix the batch (``input: 1x3x112x112``, ``Reshape(x, [1, -1])``). The importer
reads the static shapes (``onnx.shape_inference``); a ``Reshape`` whose input and constant target both lead
with the graph input's static batch keeps its input's batch instead, so any batch runs (tested: batch n
equals n runs of batch 1). Anything outside ``SUPPORTED_OPS`` is a one-line LeamError naming the op and node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from leam.errors import LeamError
from leam.models import graph as g

__all__ = ["SUPPORTED_OPS", "load_onnx", "onnx_module"]

_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Abs": "abs", "Neg": "neg", "Exp": "exp",
          "Sqrt": "sqrt", "Identity": "identity", "Dropout": "identity"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min", "Pow": "pow"}
SUPPORTED_OPS = sorted(set(_UNARY) | set(_BINARY) | {
    "Conv", "PRelu", "LeakyRelu", "Clip", "BatchNormalization", "Reshape", "Flatten", "Gemm", "MatMul",
    "GlobalAveragePool", "AveragePool", "MaxPool", "Concat", "Pad", "ReduceMean", "Constant"})


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is in requirements.txt
        raise LeamError("reading ONNX models needs the PyPI package onnx (pip install -r requirements.txt)") from None
    return onnx


def _attributes(node) -> dict[str, Any]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _static_shapes(model) -> dict[str, list[int]]:
    """Value name -> static shape (0 for an unknown dimension), from ONNX's own shape inference."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is only a help; shapes stay unknown
        inferred = model
    shapes = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [int(d.dim_value) if d.HasField("dim_value") else 0 for d in dims]
    return shapes


def onnx_module(model, normalisation: g.PixelNormalisation, taps: dict[str, str] | None = None,
                output: str | None = None, description: str = "") -> g.GraphModule:
    """An ``onnx.ModelProto`` -> :class:`GraphModule` (RGB 0..255 in, the graph's ``output`` value out)."""
    _onnx()  # a one-line LeamError when onnx is not installed
    from onnx import numpy_helper

    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in consts]
    if len(inputs) != 1:
        raise LeamError(f"ONNX graph has {len(inputs)} inputs ({', '.join(inputs)}); a face model has one image input")
    outputs = [value.name for value in graph.output]
    output = output or (outputs[0] if outputs else "")
    shapes = _static_shapes(model)
    input_shape = shapes.get(inputs[0], [])
    static_batch = input_shape[0] if input_shape and input_shape[0] > 0 else 0

    ops: dict[str, nn.Module] = {}
    nodes: list[g.Node] = []
    taken: set[str] = set()
    for index, node in enumerate(graph.node):
        op, attrs = node.op_type, _attributes(node)
        if op == "Constant":
            value = attrs.get("value")
            if value is None:
                raise LeamError(f"ONNX Constant {node.name!r} without a tensor value is not supported")
            consts[node.output[0]] = numpy_helper.to_array(value)
            continue
        names = [name for name in node.input if name]
        live = [name for name in names if name not in consts]
        where = f"ONNX node {node.name or node.output[0]!r} ({op})"

        def const(position: int, what: str) -> np.ndarray:
            if position >= len(node.input) or not node.input[position]:
                return None
            if node.input[position] not in consts:
                raise LeamError(f"{where}: its {what} must be a constant")
            return consts[node.input[position]]

        if op == "Conv":
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise LeamError(f"{where}: auto_pad={attrs['auto_pad']!r} is not supported")
            weight = const(1, "weight")
            if weight.ndim != 4:
                raise LeamError(f"{where}: only 2-D convolutions are supported (weight {weight.shape})")
            top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
            module = g.Conv(weight, const(2, "bias"), attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]),
                            attrs.get("group", 1), (top, bottom, left, right))
            live = live[:1]
        elif op in _UNARY:
            module, live = g.Unary(_UNARY[op]), live[:1]
        elif op == "LeakyRelu":
            module = g.LeakyRelu(float(attrs.get("alpha", 0.01)))
        elif op == "Clip":
            low = attrs.get("min", const(1, "min") if len(node.input) > 1 else None)
            high = attrs.get("max", const(2, "max") if len(node.input) > 2 else None)
            module = g.Clip(None if low is None else float(low), None if high is None else float(high))
            live = live[:1]
        elif op == "PRelu":
            module = g.PRelu(const(1, "slope"))
        elif op in _BINARY:
            if len(live) == 2:
                module = g.Binary(_BINARY[op])
            elif len(live) == 1:
                position = 0 if names[0] in consts else 1
                module = g.Binary(_BINARY[op], consts[names[position]], const_index=position)
            else:
                raise LeamError(f"{where}: both operands are constants (fold them before export)")
        elif op == "BatchNormalization":
            scale, shift, mean, var = (const(k, n) for k, n in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")))
            factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
            module = g.ChannelAffine(factor, shift - mean * factor)
        elif op == "Reshape":
            shape = [int(s) for s in const(1, "shape")]
            source = shapes.get(names[0], [])
            if 0 in shape[1:] or (shape and shape[0] == 0 and attrs.get("allowzero", 0)):
                raise LeamError(f"{where}: zeros in the target shape {shape} are not supported")
            keeps_batch = bool(static_batch) and bool(source) and source[0] == static_batch and shape[:1] in (
                [static_batch], [0])
            module, live = g.Reshape(shape, batch_from_input=keeps_batch or shape[:1] == [0]), live[:1]
        elif op == "Flatten":
            module = g.Flatten(int(attrs.get("axis", 1)))
        elif op in ("Gemm", "MatMul"):
            weight = const(1, "weight")
            if op == "Gemm":
                if attrs.get("transA", 0):
                    raise LeamError(f"{where}: transA=1 is not supported")
                weight = (weight.T if attrs.get("transB", 0) else weight) * float(attrs.get("alpha", 1.0))
                bias = const(2, "bias")
                bias = None if bias is None else bias * float(attrs.get("beta", 1.0))
            else:
                bias = None
                if len(shapes.get(names[0], [0, 0])) != 2 or weight.ndim != 2:
                    raise LeamError(f"{where}: only 2-D MatMul (after Flatten) is supported")
            module, live = g.Linear(weight, bias), live[:1]
        elif op == "GlobalAveragePool":
            module = g.Reduce([2, 3], keepdim=True)
        elif op in ("AveragePool", "MaxPool"):
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise LeamError(f"{where}: auto_pad={attrs['auto_pad']!r} is not supported")
            kernel = attrs["kernel_shape"]
            top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
            module = g.Pool("avg" if op == "AveragePool" else "max", kernel, attrs.get("strides", kernel),
                            (top, bottom, left, right), ceil_mode=bool(attrs.get("ceil_mode", 0)),
                            count_include_pad=op == "AveragePool" and bool(attrs.get("count_include_pad", 0)))
        elif op == "Concat":
            if len(live) != len(names):
                raise LeamError(f"{where}: constant operands are not supported")
            module = g.Concat(int(attrs["axis"]))
        elif op == "Pad":
            if attrs.get("mode", b"constant") not in (b"constant", "constant"):
                raise LeamError(f"{where}: mode={attrs['mode']!r} is not supported")
            pads = attrs.get("pads")
            pads = [int(p) for p in (pads if pads is not None else const(1, "pads"))]
            value = const(2, "value") if len(node.input) > 2 else attrs.get("value", 0.0)
            half = len(pads) // 2
            torch_pads = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
            module, live = g.Pad(torch_pads, float(0.0 if value is None else value)), live[:1]
        elif op == "ReduceMean":
            axes = attrs.get("axes")
            if axes is None and len(node.input) > 1:
                axes = const(1, "axes").tolist()
            if axes is None:
                raise LeamError(f"{where}: ReduceMean over all axes is not supported")
            module, live = g.Reduce([int(a) for a in axes], bool(attrs.get("keepdims", 1))), live[:1]
        else:
            raise LeamError(f"unsupported ONNX op {op!r} at node {node.name!r}; supported: {', '.join(SUPPORTED_OPS)}")
        if len(node.output) != 1 and op not in ("Dropout", "BatchNormalization", "MaxPool"):
            raise LeamError(f"{where}: nodes with {len(node.output)} outputs are not supported")
        key = g.unique_key(node.name, taken, f"node{index}")
        ops[key] = module
        nodes.append(g.Node(key, tuple(live), node.output[0]))
    return g.GraphModule(ops, nodes, inputs[0], output, normalisation, taps, description)


def load_onnx(path: str | Path, normalisation: g.PixelNormalisation, taps: dict[str, str] | None = None,
              output: str | None = None) -> g.GraphModule:
    """Read an ``.onnx`` file (checksum already verified by the caller) into a :class:`GraphModule`."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise LeamError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    return onnx_module(model, normalisation, taps, output, description=path.name)
