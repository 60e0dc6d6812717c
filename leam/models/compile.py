"""Lower an imported graph (:class:`GraphModule` interpreter) to native, fused PyTorch layers.

Why: an importer reproduces the file node by node, so a MobileNet block arrives as conv -> mul -> add ->
relu -> minimum -> maximum (TF.js batch norm and ReLU6) or with PReLU spelt as ``relu(x) + c * (x - |x|)``
(TFLite), and every one of those nodes is a full pass over memory, forward and backward. LEAM runs each
network forward and backward over every photo, so this is most of ``dvc repro``'s time.

What :func:`compile_graph` does, for one input size (``SAME`` padding depends on it):
- resolves ``SAME`` padding to fixed pads and folds a following zero ``Pad`` into the conv;
- folds per-channel affine ops after a conv (batch norm as mul/add/sub/div, :class:`ChannelAffine`) into its
  weight and bias;
- merges the clamps that follow (relu, relu6, minimum/maximum with a scalar, clip) into one activation;
- recognises the two PReLU spellings (``max(x, 0) + a * min(x, 0)`` and ``relu(x) + c * (x - |x|)``);
- sets negligible conv weights (``NEGLIGIBLE_WEIGHT``) to 0, so they cannot make subnormal products;
- emits ``nn.Conv2d`` (:class:`LopsidedConv2d` for TF's lopsided ``SAME`` pads, ``nn.ZeroPad2d`` in front
  for other lopsided pads) followed by ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Hardtanh`` / ``nn.PReLU``, and
  optionally ``channels_last`` weights and activations.

A value that a tap names (the layers LEAM hooks) or the output is never fused away, so hooks see exactly
the interpreter's tensors; the result is again a :class:`GraphModule` (same taps, ``run`` for the values
that survive) and tests hold it equal to the interpreter to 1e-5 of each value's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from leam.models import graph as g

__all__ = ["LopsidedConv2d", "compile_graph"]

_INF = math.inf
NEGLIGIBLE_WEIGHT = 1e-12
"""Conv weights smaller than this in magnitude are set to 0 in the compiled module. Their products with
activations (order 1e-3..1e3) lie below float32's resolution of any output above ~1e-2, and many land in
the subnormal range, which x86 CPUs compute 10-100x slower: faceplugin's fr_feature.onnx holds 56 325 such
weights (dead channels of a decayed training run), and zeroing them halves its forward time while its
embeddings stay bit-identical on random inputs and within the tested tolerance on faces."""


@dataclass
class _ConvPlan:
    """A convolution being assembled: weight (O, I/groups, kh, kw), bias (O,), pads (top, bottom, left, right),
    then an optional clamp (low, high) and at most one other activation."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pads: tuple[int, int, int, int]
    clamp: tuple[float, float] | None = None
    activation: str | None = None

    @property
    def open(self) -> bool:
        """Affine ops can still fold into the weights (no activation applied yet)."""
        return self.clamp is None and self.activation is None

    def module(self) -> nn.Module:
        weight = torch.where(self.weight.abs() < NEGLIGIBLE_WEIGHT, 0.0, self.weight)
        top, bottom, left, right = self.pads
        layers: list[nn.Module] = []
        if top == bottom and left == right:
            conv = _conv2d(weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        elif all(abs(after - before) in (0, step) for (before, after), step
                 in zip(((top, bottom), (left, right)), self.dilation)):
            conv = LopsidedConv2d(weight, self.bias, self.stride, self.pads, self.dilation, self.groups)
        else:
            layers.append(nn.ZeroPad2d((left, right, top, bottom)))
            conv = _conv2d(weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)
        layers.append(conv)
        if self.clamp is not None:
            layers.append(_clamp_module(*self.clamp, inplace=True))
        if self.activation is not None:
            layers.append(g.Unary(self.activation))
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def _conv2d(weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
            dilation: tuple[int, int], groups: int) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding ``weight`` (O, I/groups, kh, kw) and ``bias`` (O,) or None."""
    out_channels, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_channels, (kh, kw), stride, padding, dilation, groups,
                     bias is not None)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


class LopsidedConv2d(nn.Conv2d):
    """A convolution with pads (top, bottom, left, right) that differ by one tap per axis, without a pad copy.

    TF's ``SAME`` rule pads (0, 1) for k=3, stride 2 on even sizes. ``nn.Conv2d`` pads only symmetrically, so
    the kernel grows by one zero tap on the side with less padding and pads ``max(before, after)`` on both:
    along an axis with pads (a, a + d) (d = dilation), ``out[i] = sum_k w[k] x[s i + d k - a]`` becomes
    ``sum_k' w'[k'] xpad[s i + d k' - (a + d)]`` with ``w' = (0, w)``, which reads the same pixels with the
    same weights and the same zeros past the border, and has the same output size. The zero taps cost
    ``(k + 1)^2 / k^2`` of the multiply-adds but no copy of the input (an ``nn.ZeroPad2d`` in front writes
    the whole padded tensor, forward and backward); on CPU this is faster for every stride-2 SAME conv of
    the shipped networks (``benchmarks/compile.py``).

    ``receptive_window``: the original kernel, stride, leading pad and dilation per axis, which
    :func:`leam.placement.trace_cell_geometry` uses instead of the grown kernel (zero taps see nothing).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                 pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int) -> None:
        out_channels, in_per_group, kh, kw = weight.shape
        top, bottom, left, right = pads
        grown = torch.zeros(out_channels, in_per_group, kh + (top != bottom), kw + (left != right))
        rows = slice(1, None) if top < bottom else slice(0, kh)
        cols = slice(1, None) if left < right else slice(0, kw)
        grown[:, :, rows, cols] = weight
        super().__init__(in_per_group * groups, out_channels, tuple(grown.shape[-2:]), stride,
                         (max(top, bottom), max(left, right)), dilation, groups, bias is not None)
        self.weight.data.copy_(grown)
        if bias is not None:
            self.bias.data.copy_(bias)
        self.pads = tuple(pads)
        self.receptive_window = ((kh, stride[0], top, dilation[0]), (kw, stride[1], left, dilation[1]))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pads={self.pads} (kernel {self.receptive_window[0][0]}x" \
               f"{self.receptive_window[1][0]} + zero taps)"


@dataclass
class _Op:
    module: object  # nn.Module or _ConvPlan
    inputs: list[str]
    output: str
    extra: dict = field(default_factory=dict)


def _clamp_module(low: float, high: float, inplace: bool = False) -> nn.Module:
    """The native layer of clamp(x, low, high); ``inplace`` only on a fresh conv output nothing else reads."""
    if low == 0 and high == _INF:
        return nn.ReLU(inplace=inplace)
    if low == 0 and high == 6:
        return nn.ReLU6(inplace=inplace)
    if math.isfinite(low) and math.isfinite(high):
        return nn.Hardtanh(low, high, inplace=inplace)
    return g.Clip(None if low == -_INF else low, None if high == _INF else high)


def _compose(first: tuple[float, float] | None, then: tuple[float, float]) -> tuple[float, float] | None:
    """clamp(clamp(x, *first), *then) as one clamp, or None when it is not one (disjoint ranges)."""
    if first is None:
        return then
    low, high = max(first[0], then[0]), min(first[1], then[1])
    return (low, high) if low <= high else None


def _scalar(tensor: torch.Tensor | None) -> float | None:
    return float(tensor.reshape(())) if tensor is not None and tensor.numel() == 1 else None


def _channel_vector(tensor: torch.Tensor | None, channels: int) -> torch.Tensor | None:
    """A constant that broadcasts against (N, channels, h, w) only along channels, as (channels,)."""
    if tensor is None or tensor.ndim > 4:
        return None
    if tensor.numel() == 1:
        return tensor.reshape(1).expand(channels).clone()
    shape = (1,) * (4 - tensor.ndim) + tuple(tensor.shape)
    if shape[0] == 1 and shape[1] == channels and shape[2] == 1 and shape[3] == 1:
        return tensor.reshape(channels).clone()
    return None


def _clamp_of(module: nn.Module) -> tuple[float, float] | None:
    """The clamp range a node applies, if it is one (relu, relu6, clip, maximum/minimum with a scalar)."""
    if isinstance(module, g.Unary) and module.op in ("relu", "relu6", "relu_n1_to_1"):
        return {"relu": (0.0, _INF), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0)}[module.op]
    if isinstance(module, g.Clip):
        return (-_INF if module.low is None else module.low, _INF if module.high is None else module.high)
    if isinstance(module, g.Binary) and module.activation is None and module.op in ("max", "min"):
        value = _scalar(module.const)
        if value is not None:
            return (value, _INF) if module.op == "max" else (-_INF, value)
    return None


def _conv_plan(module: g.Conv, input_shape: tuple[int, ...]) -> _ConvPlan:
    kh, kw = module.weight.shape[-2:]
    if module.pads == "same":
        top, bottom = g.same_padding(input_shape[2], kh, module.stride[0], module.dilation[0])
        left, right = g.same_padding(input_shape[3], kw, module.stride[1], module.dilation[1])
        pads = (top, bottom, left, right)
    else:
        pads = tuple(module.pads)
    plan = _ConvPlan(module.weight.detach().clone(), None if module.bias is None else module.bias.detach().clone(),
                     module.stride, module.dilation, module.groups, pads)
    if module.activation is not None:
        clamp = _clamp_of(g.Unary(module.activation)) if module.activation in g.ACTIVATIONS else None
        if clamp is not None:
            plan.clamp = clamp
        else:
            plan.activation = module.activation
    return plan


def _absorb(plan: _ConvPlan, module: nn.Module) -> bool:
    """Fold ``module`` (applied to the conv's output) into ``plan``; False when it does not fold."""
    channels = plan.weight.shape[0]
    clamp = _clamp_of(module)
    if clamp is not None and plan.activation is None:
        merged = _compose(plan.clamp, clamp)
        if merged is None:
            return False
        plan.clamp = merged
        return True
    if isinstance(module, g.Unary) and plan.activation is None and module.op not in ("identity",):
        if module.op in ("sigmoid", "tanh", "elu"):
            plan.activation = module.op
            return True
        return False
    if not plan.open:
        return False
    if isinstance(module, g.ChannelAffine):
        scale, shift = _channel_vector(module.scale, channels), _channel_vector(module.shift, channels)
    elif isinstance(module, g.Binary) and module.activation is None and module.const is not None:
        vector = _channel_vector(module.const, channels)
        if vector is None or (module.op in ("sub", "div") and module.const_index != 1):
            return False
        ones, zeros = torch.ones(channels), torch.zeros(channels)
        scale, shift = {"add": (ones, vector), "sub": (ones, -vector), "mul": (vector, zeros),
                        "div": (1.0 / vector, zeros)}.get(module.op, (None, None))
    else:
        return False
    if scale is None or shift is None:
        return False
    plan.weight = plan.weight * scale.reshape(-1, 1, 1, 1)
    bias = plan.bias if plan.bias is not None else torch.zeros(channels)
    plan.bias = bias * scale + shift
    return True


def _consumers(ops: list[_Op]) -> dict[str, list[int]]:
    users: dict[str, list[int]] = {}
    for k, op in enumerate(ops):
        for name in op.inputs:
            users.setdefault(name, []).append(k)
    return users


def _prelu_slope(ops: list[_Op], k: int, producer: dict[str, int], users: dict[str, list[int]],
                 protected: set[str]) -> tuple[str, torch.Tensor, list[int]] | None:
    """If ops[k] is the add that ends a spelt-out PReLU of some x: (x, slope, indices of its other nodes)."""
    add = ops[k].module
    if not (isinstance(add, g.Binary) and add.op == "add" and add.const is None and len(ops[k].inputs) == 2):
        return None

    def node(name):
        index = producer.get(name)
        if index is None or name in protected or len(users.get(name, [])) != 1:
            return None, None
        return index, ops[index].module

    for first, second in (ops[k].inputs, ops[k].inputs[::-1]):
        i, positive = node(first)
        j, scaled = node(second)
        if i is None or j is None or not (isinstance(scaled, g.Binary) and scaled.op == "mul"
                                           and scaled.const is not None):
            continue
        x = ops[i].inputs[0] if ops[i].inputs else None
        m, negative = node(ops[j].inputs[0])
        if m is None:
            continue
        # max(x, 0) + a * min(x, 0)
        if (isinstance(positive, g.Binary) and positive.op == "max" and _scalar(positive.const) == 0.0
                and isinstance(negative, g.Binary) and negative.op == "min" and _scalar(negative.const) == 0.0
                and ops[m].inputs == [x]):
            return x, scaled.const.detach(), [i, j, m]
        # relu(x) + c * (x - |x|)  ==  relu(x) + 2c * min(x, 0)
        if (isinstance(positive, g.Unary) and positive.op == "relu" and isinstance(negative, g.Binary)
                and negative.op == "sub" and negative.const is None and ops[m].inputs[0] == x):
            a, absolute = node(ops[m].inputs[1])
            if a is not None and isinstance(absolute, g.Unary) and absolute.op == "abs" and ops[a].inputs == [x]:
                return x, 2.0 * scaled.const.detach(), [i, j, m, a]
    return None


def _fuse_prelus(ops: list[_Op], protected: set[str]) -> list[_Op]:
    producer = {op.output: k for k, op in enumerate(ops)}
    users = _consumers(ops)
    dropped: set[int] = set()
    for k in range(len(ops)):
        found = _prelu_slope(ops, k, producer, users, protected)
        if found is None:
            continue
        x, slope, parts = found
        if any(p in dropped for p in parts):
            continue
        ops[k] = _Op(g.PRelu(slope.numpy()), [x], ops[k].output)
        dropped.update(parts)
    return [op for k, op in enumerate(ops) if k not in dropped]


def _fuse_into_convs(ops: list[_Op], protected: set[str]) -> list[_Op]:
    changed = True
    while changed:
        changed = False
        users = _consumers(ops)
        for k, op in enumerate(ops):
            plan = op.module
            if not isinstance(plan, _ConvPlan) or op.output in protected or len(users.get(op.output, [])) != 1:
                continue
            j = users[op.output][0]
            if len(ops[j].inputs) != 1 or not _absorb(plan, ops[j].module):
                continue
            op.output = ops[j].output
            del ops[j]
            changed = True
            break
    return ops


def _fold_pads(ops: list[_Op], protected: set[str]) -> list[_Op]:
    users = _consumers(ops)
    dropped = set()
    for k, op in enumerate(ops):
        pad = op.module
        if not isinstance(pad, g.Pad) or pad.value != 0.0 or op.output in protected:
            continue
        if len(users.get(op.output, [])) != 1 or any(pad.pads[4:]):
            continue
        j = users[op.output][0]
        plan = ops[j].module
        if isinstance(plan, _ConvPlan) and len(pad.pads) >= 4:
            left, right, top, bottom = pad.pads[:4]
            t, b, lf, r = plan.pads
            plan.pads = (t + top, b + bottom, lf + left, r + right)
            ops[j].inputs = list(op.inputs)
            dropped.add(k)
    return [op for k, op in enumerate(ops) if k not in dropped]


def compile_graph(graph: g.GraphModule, input_size: int | tuple[int, int],
                  channels_last: bool = False) -> g.GraphModule:
    """A :class:`GraphModule` of native fused layers computing what ``graph`` computes at ``input_size``
    (H = W, or (H, W) for a non-square graph).

    ``channels_last``: weights and activations in NHWC memory order (faster on CPU for most mobile
    networks; ``benchmarks/compile.py`` measures it per network). Taps and the output keep their names.
    """
    shapes = graph.value_shapes(input_size)
    protected = set(graph.taps.values()) | {graph.output_name}
    ops: list[_Op] = []
    for node in graph.nodes:
        module = graph.ops[node.key]
        if isinstance(module, g.Conv):
            module = _conv_plan(module, shapes[node.inputs[0]])
        elif isinstance(module, g.Pool) and module.pads == "same":
            module = _static_pool(module, shapes[node.inputs[0]])
        ops.append(_Op(module, list(node.inputs), node.output))
    ops = _fuse_prelus(ops, protected)
    ops = _fold_pads(ops, protected)
    ops = _fuse_into_convs(ops, protected)
    modules: dict[str, nn.Module] = {}
    nodes: list[g.Node] = []
    taken: set[str] = set()
    for op in ops:
        module = op.module.module() if isinstance(op.module, _ConvPlan) else _native(op.module)
        key = g.unique_key(op.output, taken, f"node{len(nodes)}")
        modules[key] = module
        nodes.append(g.Node(key, tuple(op.inputs), op.output))
    compiled = g.GraphModule(modules, nodes, graph.input_name, graph.output_name, graph.normalisation,
                             graph.taps, graph.description, channels_last=channels_last)
    parameter = next(iter(graph.parameters()), None)
    if parameter is not None:
        compiled = compiled.to(parameter.device)
    return compiled.to(memory_format=torch.channels_last) if channels_last else compiled


def _static_pool(module: g.Pool, input_shape: tuple[int, ...]) -> g.Pool:
    top, bottom = g.same_padding(input_shape[2], module.kernel[0], module.stride[0])
    left, right = g.same_padding(input_shape[3], module.kernel[1], module.stride[1])
    return g.Pool(module.kind, module.kernel, module.stride, (top, bottom, left, right), module.ceil_mode,
                  module.activation, module.count_include_pad)


def _native(module: nn.Module) -> nn.Module:
    """The torch layer for an interpreter node where one exists (PReLU per channel), else the node itself."""
    if isinstance(module, g.PRelu):
        slope = module.slope.detach()
        shape = (1,) * (4 - slope.ndim) + tuple(slope.shape) if slope.ndim <= 4 else None
        if shape is not None and shape[0] == 1 and shape[2] == 1 and shape[3] == 1:
            native = nn.PReLU(shape[1])
            native.weight.data.copy_(slope.reshape(-1))
            return native
    clamp = _clamp_of(module) if isinstance(module, (g.Unary, g.Clip)) else None
    if clamp is not None:
        return _clamp_module(*clamp)
    return module


