"""Read a float TFLite face-recognition network into a frozen, hookable PyTorch module (:class:`GraphModule`).

The flatbuffer is parsed with PyPI ``tflite`` (generated flatbuffers accessors, pure Python; imported when a
model is loaded) and every operator becomes one torch op of :mod:`leam.models.graph`. ``ai-edge-litert``
(LiteRT, formerly the TF Lite interpreter) is the reference runtime the tests compare against.

Layout: TFLite is NHWC; activations here are NCHW. Kernels are converted once (CONV_2D OHWI -> OIHW,
DEPTHWISE_CONV_2D 1,H,W,C*M -> C*M,1,H,W), constants that broadcast against a 4-D value are permuted once,
and axes of MEAN / CONCATENATION / PAD are mapped; RESHAPE and FULLY_CONNECTED go back to NHWC first, so
flattening keeps TFLite's element order. ``SAME`` padding follows TF (the odd pixel bottom/right).
Fused activations (``fused_activation_function``) are applied after their op.

Batch size: a file exported for a fixed batch (``2x112x112x3``) runs any batch here: a RESHAPE whose input
and target both lead with the input's static batch keeps its input's batch. Quantised (int8/uint8) tensors
and ops outside ``SUPPORTED_OPS`` are one-line LeamErrors naming the op; float16 weights behind DEQUANTIZE
are folded into float32 constants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from leam.errors import LeamError
from leam.models import graph as g

__all__ = ["SUPPORTED_OPS", "load_tflite", "tflite_module"]

_ACTIVATION = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}
_UNARY = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1", "LOGISTIC": "sigmoid",
          "TANH": "tanh", "ABS": "abs", "NEG": "neg", "EXP": "exp", "SQRT": "sqrt"}
_BINARY = {"ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "MAXIMUM": "max", "MINIMUM": "min"}
SUPPORTED_OPS = sorted(set(_UNARY) | set(_BINARY) | {
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D",
    "PAD", "CONCATENATION", "PRELU", "L2_NORMALIZATION", "DEQUANTIZE"})
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
"""TensorType codes this importer reads (FLOAT32, FLOAT16, INT32, INT64)."""


def _tflite():
    try:
        import tflite
    except ImportError:  # pragma: no cover - tflite is in requirements.txt
        raise LeamError("reading TFLite models needs the PyPI package tflite (pip install -r requirements.txt)") from None
    return tflite


class _FullyConnected(nn.Module):
    """TFLite FULLY_CONNECTED: flatten in NHWC order, then ``x @ W.T + b``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, activation: str | None) -> None:
        super().__init__()
        self.linear = g.Linear(weight.T, bias, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        return self.linear(x.reshape(-1, self.linear.weight.shape[0]))


def _options(tflite, op, cls_name: str):
    table = op.BuiltinOptions()
    if table is None:
        return None
    options = getattr(tflite, cls_name)()
    options.Init(table.Bytes, table.Pos)
    return options


def tflite_module(buffer: bytes, normalisation: g.PixelNormalisation, taps: dict[str, str] | None = None,
                  output: str | None = None, description: str = "") -> g.GraphModule:
    """A TFLite flatbuffer (bytes) -> :class:`GraphModule` (RGB 0..255 NCHW in, the graph's output out)."""
    tflite = _tflite()
    try:
        model = tflite.Model.GetRootAsModel(buffer, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        graph = model.Subgraphs(0)
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises several types for a damaged file
        raise LeamError(f"{description or 'buffer'} is not a readable TFLite model ({type(exc).__name__})") from None
    op_names = {value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))

    def name_of(index: int) -> str:
        return graph.Tensors(index).Name().decode()

    def shape_of(index: int) -> list[int]:
        tensor = graph.Tensors(index)
        return [int(s) for s in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []

    consts: dict[int, np.ndarray] = {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy() if tensor.Buffer() < model.BuffersLength() else 0
        if isinstance(data, np.ndarray) and data.size:
            dtype = _DTYPES.get(tensor.Type())
            if dtype is None:
                raise LeamError(f"TFLite tensor {name_of(index)!r} has type code {tensor.Type()}: only float32/"
                                f"float16/int32/int64 models are supported (quantised models are not)")
            consts[index] = np.frombuffer(data.tobytes(), dtype=dtype).reshape(shape_of(index))

    inputs = [graph.Inputs(i) for i in range(graph.InputsLength()) if graph.Inputs(i) not in consts]
    if len(inputs) != 1:
        raise LeamError(f"TFLite graph has {len(inputs)} inputs; a face model has one image input")
    input_shape = shape_of(inputs[0])
    if len(input_shape) != 4 or input_shape[3] != 3:
        raise LeamError(f"TFLite input {name_of(inputs[0])!r} has shape {input_shape}; expected (N, H, W, 3)")
    static_batch = input_shape[0]
    rank = {inputs[0]: 4}
    output = output or name_of(graph.Outputs(0))

    ops: dict[str, nn.Module] = {}
    nodes: list[g.Node] = []
    taken: set[str] = set()
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        kind = codes[op.OpcodeIndex()]
        ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(i) for i in op.OutputsAsNumpy()]
        where = f"TFLite op {k} {kind} -> {name_of(outs[0])!r}"
        if len(outs) != 1:
            raise LeamError(f"{where}: ops with {len(outs)} outputs are not supported")
        live = [i for i in ins if i >= 0 and i not in consts]
        out_rank = len(shape_of(outs[0]))

        def const(position: int, what: str) -> np.ndarray | None:
            if position >= len(ins) or ins[position] < 0:
                return None
            if ins[position] not in consts:
                raise LeamError(f"{where}: its {what} must be a constant")
            return consts[ins[position]].astype(np.float32) if consts[ins[position]].dtype == np.float16 \
                else consts[ins[position]]

        if kind == "DEQUANTIZE":
            if ins[0] not in consts:
                raise LeamError(f"{where}: only constant (weight) DEQUANTIZE is supported")
            consts[outs[0]] = consts[ins[0]].astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = _options(tflite, op, "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions")
            kernel = const(1, "kernel").astype(np.float32)
            if kind == "CONV_2D":
                weight, groups = kernel.transpose(0, 3, 1, 2), 1
            else:  # (1, H, W, C*M) -> (C*M, 1, H, W); output channel c*M+m reads input channel c
                weight = kernel.transpose(3, 0, 1, 2)
                groups = shape_of(ins[0])[3]
            pads = "same" if options.Padding() == tflite.Padding.SAME else (0, 0, 0, 0)
            module = g.Conv(weight, const(2, "bias"), (options.StrideH(), options.StrideW()),
                            (options.DilationHFactor(), options.DilationWFactor()), groups, pads,
                            _ACTIVATION[options.FusedActivationFunction()])
            live = live[:1]
        elif kind in _UNARY:
            module = g.Unary(_UNARY[kind])
        elif kind in _BINARY:
            options = _options(tflite, op, {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions",
                                            "DIV": "DivOptions"}.get(kind, "AddOptions"))
            activation = _ACTIVATION[options.FusedActivationFunction()] if options is not None and hasattr(
                options, "FusedActivationFunction") else None
            if len(live) == 2:
                if len({rank[i] for i in live}) != 1 and out_rank == 4:
                    raise LeamError(f"{where}: operands of different ranks are not supported")
                module = g.Binary(_BINARY[kind], activation=activation)
            elif len(live) == 1:
                position = 0 if ins[0] in consts else 1
                value = const(position, "operand").astype(np.float32)
                module = g.Binary(_BINARY[kind], g.nhwc_constant_to_nchw(value) if out_rank == 4 else value,
                                  const_index=position, activation=activation)
            else:
                raise LeamError(f"{where}: both operands are constants")
        elif kind == "PRELU":
            alpha = const(1, "alpha").astype(np.float32)
            module = g.PRelu(g.nhwc_constant_to_nchw(alpha) if out_rank == 4 else alpha)
        elif kind == "RESHAPE":
            target = shape_of(outs[0])
            source = shape_of(ins[0])
            keeps_batch = bool(source) and bool(target) and source[0] == static_batch == target[0]
            module = g.Reshape([-1 if keeps_batch and i == 0 else s for i, s in enumerate(target)],
                               batch_from_input=keeps_batch, nhwc=True)
            live = live[:1]
        elif kind == "FULLY_CONNECTED":
            options = _options(tflite, op, "FullyConnectedOptions")
            if options is not None and options.KeepNumDims():
                raise LeamError(f"{where}: keep_num_dims is not supported")
            module = _FullyConnected(const(1, "weights").astype(np.float32), const(2, "bias"),
                                     _ACTIVATION[options.FusedActivationFunction()] if options else None)
            live = live[:1]
        elif kind == "MEAN":
            options = _options(tflite, op, "ReducerOptions")
            axes = [int(a) % rank[ins[0]] for a in np.atleast_1d(const(1, "axes"))]
            keep = bool(options.KeepDims()) if options else False
            if rank[ins[0]] == 4 and not keep and sorted(axes) != [1, 2]:
                raise LeamError(f"{where}: only spatial means (axes 1, 2) of 4-D values are supported")
            module = g.Reduce([g.NCHW_AXIS[a] for a in axes] if rank[ins[0]] == 4 else axes, keep)
            live = live[:1]
        elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            options = _options(tflite, op, "Pool2DOptions")
            pads = "same" if options.Padding() == tflite.Padding.SAME else (0, 0, 0, 0)
            module = g.Pool("avg" if kind == "AVERAGE_POOL_2D" else "max",
                            (options.FilterHeight(), options.FilterWidth()), (options.StrideH(), options.StrideW()),
                            pads, activation=_ACTIVATION[options.FusedActivationFunction()])
        elif kind == "PAD":
            paddings = const(1, "paddings").astype(int)
            if rank[ins[0]] == 4:
                (n0, n1), (top, bottom), (left, right), (c0, c1) = paddings.tolist()
                torch_pads = (left, right, top, bottom, c0, c1, n0, n1)
            else:
                torch_pads = tuple(int(x) for pair in paddings[::-1].tolist() for x in pair)
            module, live = g.Pad(torch_pads), live[:1]
        elif kind == "CONCATENATION":
            options = _options(tflite, op, "ConcatenationOptions")
            if len(live) != len(ins):
                raise LeamError(f"{where}: constant operands are not supported")
            axis = options.Axis() % out_rank
            module = g.Concat(g.NCHW_AXIS[axis] if out_rank == 4 else axis)
        elif kind == "L2_NORMALIZATION":
            module = g.L2Normalize(1 if out_rank == 4 else -1)
        else:
            raise LeamError(f"unsupported TFLite op {kind!r} ({where}); supported: {', '.join(SUPPORTED_OPS)}")
        rank[outs[0]] = out_rank
        key = g.unique_key(name_of(outs[0]), taken, f"op{k}")
        ops[key] = module
        nodes.append(g.Node(key, tuple(name_of(i) for i in live), name_of(outs[0])))
    return g.GraphModule(ops, nodes, name_of(inputs[0]), output, normalisation, taps, description)


def load_tflite(path: str | Path, normalisation: g.PixelNormalisation, taps: dict[str, str] | None = None,
                output: str | None = None) -> g.GraphModule:
    """Read a ``.tflite`` file (checksum already verified by the caller) into a :class:`GraphModule`."""
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"TFLite model not found: {path}")
    return tflite_module(path.read_bytes(), normalisation, taps, output, description=path.name)
