"""A frozen PyTorch module that executes an imported inference graph (ONNX, TFLite, TF.js) one node at a time.

Why: LEAM needs gradients of the embedding with respect to intermediate activations, and a graph read from
a file has no Python class whose attributes could be hooked. The importers (:mod:`leam.models.onnx_import`,
:mod:`leam.models.tflite_import`, :mod:`leam.models.tfjs_import`) translate every node into one small
``nn.Module`` of torch ops (:class:`Conv`, :class:`Binary`, ...); :class:`GraphModule` runs them in
topological order. :mod:`leam.models.compile` lowers this interpreter to native fused layers; the
interpreter stays as the reference the compiled module is tested against.

Conventions:
- activations are NCHW, whatever layout the file uses (a TFLite importer permutes its NHWC constants once);
- ``forward`` takes float RGB 0..255 (N, 3, s, s), the contract of :mod:`leam.models.spec`, and applies the
  model's own :class:`PixelNormalisation` (channel order, mean, std) before the first node;
- every node is a submodule ``ops.<node key>``; ``taps={"conv1": "<value name>"}`` adds an ``nn.Identity``
  submodule ``conv1`` on that value, the stable LEAM layer names of a spec;
- constants are ``nn.Parameter`` with ``requires_grad=False`` (``.to(device)`` moves them, nothing trains);
- a graph exported with a fixed batch size (``1x3x112x112``, ``2x112x112x3``) still runs any batch: a
  :class:`Reshape` whose input and target both lead with that static batch keeps its input's batch instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam.errors import LeamError

__all__ = ["PixelNormalisation", "GraphModule", "Conv", "Binary", "Unary", "PRelu", "LeakyRelu", "Clip",
           "ChannelAffine", "Reshape", "Squeeze", "Linear", "Pool", "Concat", "Reduce", "Softmax", "Pad", "Flatten",
           "L2Normalize", "AddN", "ResizeBilinear", "ConvTranspose", "NhwcBroadcast", "constant", "nhwc_constant_to_nchw", "same_padding", "ACTIVATIONS",
           "NCHW_AXIS"]


TINY = 1e-30
"""Constants smaller than this in magnitude are stored as 0 (see :func:`constant`)."""


def constant(array: np.ndarray | torch.Tensor) -> nn.Parameter:
    """A frozen float32 parameter holding ``array``, with magnitudes below ``TINY`` set to 0.

    Why: exported networks can carry dead channels whose weights decayed to 1e-33 and below (10% of
    faceplugin's fr_feature.onnx); their products are subnormal floats, which x86 CPUs compute 10-100x
    slower, and they contribute nothing a float32 sum of normal values can hold.
    """
    values = np.array(array, dtype=np.float32)  # a writable copy
    values[np.abs(values) < TINY] = 0.0
    return nn.Parameter(torch.from_numpy(values), requires_grad=False)


@dataclass(frozen=True)
class PixelNormalisation:
    """RGB 0..255 -> the values the graph was trained on: ``(x[channel_order] - mean) / std``.

    ``channel_order`` is ``"RGB"`` or ``"BGR"``; ``mean`` and ``std`` are in 0..255 pixel units (one value
    or one per channel, in the graph's channel order), e.g. faceplugin ``(x - 127) / 128``.
    """

    channel_order: str = "RGB"
    mean: float | tuple[float, float, float] = 0.0
    std: float | tuple[float, float, float] = 1.0

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise LeamError(f"channel_order={self.channel_order!r} is not valid; choose one of: RGB, BGR")
        if np.any(np.asarray(self.std, dtype=float) == 0):
            raise LeamError(f"std={self.std!r} must not be 0")

    def module(self) -> nn.Module:
        return _Normalise(self)


class _Normalise(nn.Module):
    def __init__(self, spec: PixelNormalisation) -> None:
        super().__init__()
        self.flip = spec.channel_order == "BGR"
        self.register_buffer("mean", torch.as_tensor(spec.mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(spec.std, dtype=torch.float32).reshape(1, -1, 1, 1))

        self.identity = bool((self.mean == 0).all() and (self.std == 1).all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = x.flip(1)
        return x if self.identity else (x - self.mean) / self.std


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF ``SAME`` padding (before, after) along one axis: the odd pixel goes after (bottom/right)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
"""NHWC axis -> NCHW axis of a 4-D value (the TFLite and TF.js importers)."""


def nhwc_constant_to_nchw(array: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC value, rearranged to broadcast against NCHW."""
    if array.ndim == 0:
        return array
    padded = array.reshape((1,) * (4 - array.ndim) + array.shape)
    return np.ascontiguousarray(padded.transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------------
# node modules (NCHW)

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "relu_n1_to_1": lambda x: x.clamp(-1.0, 1.0),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "abs": torch.abs,
    "neg": torch.neg,
    "exp": torch.exp,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "square": torch.square,
    "elu": F.elu,
    "identity": lambda x: x,
}


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    return x if activation is None else ACTIVATIONS[activation](x)


class Conv(nn.Module):
    """2-D convolution, OIHW weight; ``pads`` = (top, bottom, left, right), or ``"same"`` for TF's rule
    (computed per input size: the odd pixel goes bottom/right); an optional fused activation."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: Sequence[int], dilation: Sequence[int],
                 groups: int, pads: Sequence[int] | str, activation: str | None = None) -> None:
        super().__init__()
        self.weight = constant(weight)
        self.bias = constant(bias) if bias is not None else None
        self.stride, self.dilation, self.groups = tuple(stride), tuple(dilation), int(groups)
        self.pads = pads if isinstance(pads, str) else tuple(int(p) for p in pads)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads == "same":
            kh, kw = self.weight.shape[-2:]
            top, bottom = same_padding(x.shape[2], kh, self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[3], kw, self.stride[1], self.dilation[1])
        else:
            top, bottom, left, right = self.pads
        if top == bottom and left == right:
            out = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        else:
            out = F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride, 0,
                           self.dilation, self.groups)
        return _activate(out, self.activation)


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "max": torch.maximum, "min": torch.minimum, "pow": torch.pow,
    "squared_difference": lambda a, b: torch.square(a - b),
}


class Binary(nn.Module):
    """Element-wise ``fn(a, b)``; either operand may be a constant (``const`` placed at ``const_index``)."""

    def __init__(self, op: str, const: np.ndarray | None = None, const_index: int = 1,
                 activation: str | None = None) -> None:
        super().__init__()
        if op not in _BINARY:
            raise LeamError(f"unsupported binary op {op!r}; supported: {', '.join(_BINARY)}")
        self.op, self.const_index, self.activation = op, const_index, activation
        self.const = constant(const) if const is not None else None

    def forward(self, *values: torch.Tensor) -> torch.Tensor:
        if self.const is not None:
            values = (values[0], self.const) if self.const_index == 1 else (self.const, values[0])
        return _activate(_BINARY[self.op](values[0], values[1]), self.activation)


class Unary(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        if op not in ACTIVATIONS:
            raise LeamError(f"unsupported activation {op!r}; supported: {', '.join(ACTIVATIONS)}")
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.op](x)


class PRelu(nn.Module):
    """``x`` where ``x >= 0``, else ``slope * x``; ``slope`` broadcasts against the NCHW input."""

    def __init__(self, slope: np.ndarray) -> None:
        super().__init__()
        self.slope = constant(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, x * self.slope)


class LeakyRelu(nn.Module):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.alpha)


class Clip(nn.Module):
    """``x.clamp(low, high)``; either bound may be None (unbounded)."""

    def __init__(self, low: float | None, high: float | None) -> None:
        super().__init__()
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


class ChannelAffine(nn.Module):
    """``x * scale + shift`` along dimension 1 (an inference-mode batch norm); ``scale``, ``shift``: (C,)."""

    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__()
        self.scale, self.shift = constant(scale), constant(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


class Reshape(nn.Module):
    """Reshape to ``shape`` (``-1`` inferred). ``batch_from_input``: the first entry is the input's batch.

    ``nhwc``: the file's layout is NHWC, so a 4-D input is permuted to NHWC before the reshape (the element
    order the graph flattens in) and a 4-D result back to NCHW.
    """

    def __init__(self, shape: Sequence[int], batch_from_input: bool = False, nhwc: bool = False) -> None:
        super().__init__()
        self.shape, self.batch_from_input, self.nhwc = [int(s) for s in shape], batch_from_input, nhwc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc and x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        shape = list(self.shape)
        if self.batch_from_input:
            shape[0] = x.shape[0]
        out = x.reshape(shape)
        return out.permute(0, 3, 1, 2) if self.nhwc and out.ndim == 4 else out


class Flatten(nn.Module):
    """ONNX ``Flatten``: (d0 * ... * d(axis-1), rest)."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.ndim if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis])), -1)


class Linear(nn.Module):
    """``alpha * x @ W + beta * b`` with ``W`` (in, out) as given (already transposed where the file says)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, activation: str | None = None) -> None:
        super().__init__()
        self.weight = constant(weight)
        self.bias = constant(bias) if bias is not None else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return _activate(out, self.activation)


class Pool(nn.Module):
    """Max or average pooling (``kind``), pads (top, bottom, left, right) or ``"same"``; average pools
    divide by the number of real (not padded) pixels, as TFLite and ONNX's default ``count_include_pad=0``,
    or by the window size with ``count_include_pad`` (symmetric pads only)."""

    def __init__(self, kind: str, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int] | str,
                 ceil_mode: bool = False, activation: str | None = None, count_include_pad: bool = False) -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise LeamError(f"unsupported pool {kind!r}; supported: max, avg")
        self.kind, self.kernel, self.stride = kind, tuple(kernel), tuple(stride)
        self.pads = pads if isinstance(pads, str) else tuple(int(p) for p in pads)
        self.ceil_mode, self.activation = bool(ceil_mode), activation
        self.count_include_pad = bool(count_include_pad)
        if self.count_include_pad and (self.pads == "same" or self.pads[0::2] != self.pads[1::2]):
            raise LeamError(f"average pooling with count_include_pad needs symmetric pads, got {self.pads}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads == "same":
            top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.kernel[1], self.stride[1])
        else:
            top, bottom, left, right = self.pads
        if self.kind == "max":
            if (top, left) != (bottom, right):
                x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
                top = left = 0
            out = F.max_pool2d(x, self.kernel, self.stride, (top, left), ceil_mode=self.ceil_mode)
        elif top == bottom and left == right and 2 * max(top, left) <= min(self.kernel):
            out = F.avg_pool2d(x, self.kernel, self.stride, (top, left), ceil_mode=self.ceil_mode,
                               count_include_pad=self.count_include_pad)
        else:  # asymmetric padding: sum of real pixels / count of real pixels
            ones = torch.ones_like(x[:1, :1])
            padded = F.pad(x, (left, right, top, bottom))
            counts = F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), self.kernel, self.stride,
                                  ceil_mode=self.ceil_mode)
            out = F.avg_pool2d(padded, self.kernel, self.stride, ceil_mode=self.ceil_mode) / counts
        return _activate(out, self.activation)


class Concat(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *values: torch.Tensor) -> torch.Tensor:
        return torch.cat(values, dim=self.dim)


_REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "mean": torch.mean, "sum": torch.sum, "max": torch.amax, "min": torch.amin, "prod": torch.prod}


class Reduce(nn.Module):
    """``kind`` (mean, sum, max, min, prod) over ``dims``. ``nhwc``: the file's layout is NHWC and the
    dims are NHWC axes, so a 4-D input is permuted to NHWC first (the order the remaining axes keep)."""

    def __init__(self, dims: Sequence[int], keepdim: bool, kind: str = "mean", nhwc: bool = False) -> None:
        super().__init__()
        if kind not in _REDUCE:
            raise LeamError(f"unsupported reduction {kind!r}; supported: {', '.join(_REDUCE)}")
        self.dims, self.keepdim, self.kind, self.nhwc = list(dims), bool(keepdim), kind, bool(nhwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc and x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        if self.kind == "prod":
            for dim in sorted(self.dims, reverse=True):
                x = torch.prod(x, dim=dim, keepdim=self.keepdim)
            return x
        return _REDUCE[self.kind](x, dim=self.dims, keepdim=self.keepdim)


class Squeeze(nn.Module):
    """Drop the size-1 ``dims``; ``nhwc`` as :class:`Reshape` (dims are NHWC axes of a 4-D input)."""

    def __init__(self, dims: Sequence[int], nhwc: bool = False) -> None:
        super().__init__()
        self.dims, self.nhwc = sorted((int(d) for d in dims), reverse=True), bool(nhwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc and x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        for dim in self.dims:
            x = x.squeeze(dim)
        return x.permute(0, 3, 1, 2) if self.nhwc and x.ndim == 4 else x


class Softmax(nn.Module):
    """Softmax over the last axis of the file's layout (channels for a 4-D NHWC value)."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.nhwc = bool(nhwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1 if self.nhwc and x.ndim == 4 else -1)


class NhwcBroadcast(nn.Module):
    """A value of rank < 4 that the file broadcasts against a 4-D NHWC value, made to broadcast in NCHW."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)).permute(0, 3, 1, 2)


class Pad(nn.Module):
    """Constant padding, ``pads`` in ``F.pad`` order (last dimension first)."""

    def __init__(self, pads: Sequence[int], value: float = 0.0) -> None:
        super().__init__()
        self.pads, self.value = tuple(int(p) for p in pads), float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, value=self.value)


class AddN(nn.Module):
    """The element-wise sum of any number of values of one shape (TF ``AddN``)."""

    def forward(self, *values: torch.Tensor) -> torch.Tensor:
        out = values[0]
        for value in values[1:]:
            out = out + value
        return out


class ResizeBilinear(nn.Module):
    """Bilinear resize of an NCHW value to ``size`` (H, W).

    ``align_corners``: corner pixels map onto corner pixels (TF ``align_corners``); otherwise pixel centres
    map with TF's ``half_pixel_centers`` rule, which is torch's ``align_corners=False`` (sources clamped at
    the border in both). TF's third, legacy rule (neither flag) has no torch equivalent and is refused by
    the importer.
    """

    def __init__(self, size: Sequence[int], align_corners: bool = False) -> None:
        super().__init__()
        self.size, self.align_corners = tuple(int(s) for s in size), bool(align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.align_corners)


class ConvTranspose(nn.Module):
    """Transposed 2-D convolution (TF ``Conv2DBackpropInput``) to an output of ``size`` (H, W).

    ``weight``: (C_in, C_out, kH, kW), torch's layout. The full transposed result ((in - 1) * stride + k)
    is cropped to ``size`` from offset ``pads`` (top, left): TF's rule for the forward convolution whose
    gradient this is (``SAME``: half the total padding, the odd pixel after; ``VALID``: 0).
    """

    def __init__(self, weight: np.ndarray, stride: Sequence[int], size: Sequence[int],
                 pads: Sequence[int]) -> None:
        super().__init__()
        self.weight = constant(weight)
        self.stride, self.size, self.pads = tuple(stride), tuple(int(s) for s in size), tuple(int(p) for p in pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(x, self.weight, None, self.stride)
        top, left = self.pads
        short_h = max(top + self.size[0] - out.shape[2], 0)
        short_w = max(left + self.size[1] - out.shape[3], 0)
        if short_h or short_w:  # the forward convolution never reached these input pixels: zero gradient
            out = F.pad(out, (0, short_w, 0, short_h))
        return out[:, :, top:top + self.size[0], left:left + self.size[1]]


class L2Normalize(nn.Module):
    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.square().sum(dim=self.dim, keepdim=True).clamp(min=self.eps).sqrt()


# ----------------------------------------------------------------------------------------------------
# the executor


@dataclass(frozen=True)
class Node:
    """One step of the plan: ``ops[key](*values[inputs])`` becomes ``values[output]``."""

    key: str
    inputs: tuple[str, ...]
    output: str


class GraphModule(nn.Module):
    """An imported graph as a frozen ``nn.Module``: RGB 0..255 (N, 3, s, s) in, ``output`` value out.

    ``nodes`` are in execution order (each after its inputs); ``ops[node.key]`` computes it. ``run(x,
    names)`` returns any computed values (``value_names`` lists them), e.g. for comparing with the
    reference runtime's intermediate tensors. ``channels_last``: the normalised input is made NHWC in memory
    (the layout :func:`leam.models.compile.compile_graph` may choose; values keep NCHW indexing).
    """

    def __init__(self, ops: dict[str, nn.Module], nodes: Sequence[Node], input_name: str, output_name: str,
                 normalisation: PixelNormalisation, taps: dict[str, str] | None = None,
                 description: str = "", channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        self.normalise = normalisation.module()
        self.normalisation = normalisation
        self.ops = nn.ModuleDict(ops)
        self.nodes = tuple(nodes)
        self.input_name, self.output_name, self.description = input_name, output_name, description
        produced = {input_name} | {node.output for node in self.nodes}
        for node in self.nodes:
            if node.key not in self.ops:
                raise LeamError(f"graph node {node.key!r} has no op")
        if output_name not in produced:
            raise LeamError(f"output {output_name!r} is not computed by the graph")
        self.taps = dict(taps or {})
        self._tap_of: dict[str, str] = {}
        for tap, value in self.taps.items():
            if not tap.isidentifier() or tap in ("ops", "normalise") or hasattr(nn.Module, tap):
                raise LeamError(f"tap name {tap!r} must be a Python identifier other than 'ops'/'normalise'")
            if value not in produced:
                raise LeamError(f"tap {tap!r}: value {value!r} is not computed by the graph")
            self._tap_of[value] = tap
            self.add_module(tap, nn.Identity())
        last_use = {name: k for k, node in enumerate(self.nodes) for name in node.inputs}
        self._last_uses = tuple(tuple(name for name in node.inputs if last_use[name] == k)
                                for k, node in enumerate(self.nodes))
        self.requires_grad_(False)
        self.eval()

    @property
    def value_names(self) -> list[str]:
        return [self.input_name] + [node.output for node in self.nodes]

    def value_shapes(self, input_size: int | tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Shape of every value for one grey (1, 3, H, W) input, in ``value_names`` order; ``input_size`` is
        H = W or (H, W) (a non-square graph, e.g. meet's 144 x 256)."""
        height, width = (input_size, input_size) if isinstance(input_size, (int, np.integer)) else input_size
        parameter = next(iter(self.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            values = self.run(torch.full((1, 3, height, width), 127.5, device=device), self.value_names)
        return {name: tuple(value.shape) for name, value in values.items()}

    def run(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        x = self.normalise(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        wanted = list(names) if names else [self.output_name]
        keep = set(wanted)
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for node, done in zip(self.nodes, self._last_uses):
            out = self.ops[node.key](*[values[name] for name in node.inputs])
            tap = self._tap_of.get(node.output)
            if tap is not None:
                out = getattr(self, tap)(out)
            values[node.output] = out
            for name in done:  # free what no later node reads (forward-only passes hold less memory)
                if name not in keep:
                    values.pop(name, None)
        missing = [name for name in wanted if name not in values]
        if missing:
            raise LeamError(f"value(s) {', '.join(map(repr, missing[:5]))} are not computed by this graph")
        return {name: values[name] for name in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.output_name]


def unique_key(name: str, taken: set[str], fallback: str) -> str:
    """A ModuleDict key from a node name: [A-Za-z0-9_] only, never empty, never taken."""
    key = re.sub(r"[^0-9A-Za-z_]", "_", name) or fallback
    if key[0].isdigit():
        key = "n" + key
    base, k = key, 1
    while key in taken:
        k += 1
        key = f"{base}_{k}"
    taken.add(key)
    return key
