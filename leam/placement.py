"""Where each cell of a coarse layer map looks in the model input, and placing maps there.

A layer's activation grid (h, w) is coarser than the model input (s, s). Every CAM library upsamples it
as if cell ``i`` of an ``h``-cell axis were centred at input pixel ``(i + 0.5) * s / h - 0.5`` (bilinear,
``align_corners=False``): the ``centred`` placement. That is true only when every convolution and pool
pads symmetrically. dlib's network pads nothing and drops the last row and column at each stride-2 step;
TensorFlow's ``SAME`` padding puts the odd pixel at the bottom/right. The true centres then drift by
several input pixels towards one corner, which shows up as left/right asymmetric region shares.

The ``receptive_field`` placement uses each layer's exact cell geometry instead. Along one axis a cell
``i`` sees the input pixels ``[start + i * jump, stop + i * jump]`` (inclusive, in input-pixel indices,
pixel centres at integer coordinates; the range may extend past the image, where the network sees its
own zero padding). The geometry follows from the conv/pool chain by the usual receptive-field recurrence
(Araujo et al., Distill 2019): a kernel ``k``, stride ``t``, dilation ``d`` and leading padding ``p``
turn ``(start, stop, jump)`` into ``(start - p * jump, stop + ((k - 1) * d - p) * jump, t * jump)``;
where branches meet (a residual add), the extents are united. :func:`trace_cell_geometry` derives it
for *any* torch module without knowing its family: it runs one forward pass under a
``TorchDispatchMode`` that follows every aten op (convolutions, pools, pads, slices, permutes,
reshapes, element-wise ops), so TF.js graphs run by the executor, dlib's port and user modules are
all covered. :func:`gradient_support` measures the same extents empirically (the bounding box of the
input gradient of one cell), and :func:`gradient_centroid` the weight-dependent centre of mass of that
gradient, a diagnostic that is not used for placement.

:func:`place_on_input` resamples a layer map (N, h, w) onto the input grid (N, s, s) with an affine from
input pixel to cell coordinate per axis, ``cell = (pixel - centre_0) / jump``; bilinear between cell
centres and constant beyond the first and last centre, as LayerCAM's upsampling is. With the centred
geometry it reproduces ``F.interpolate(..., mode="bilinear", align_corners=False)``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from leam.errors import LeamError, check_choice

__all__ = ["PLACEMENTS", "RECEPTIVE_WINDOW", "AxisGeometry", "CellGeometry", "centred_geometry", "trace_cell_geometry",
           "effective_geometry", "central_cells", "cached_geometries", "cell_table", "geometries_from_cells", "place_on_input", "gradient_support", "gradient_centroid"]

PLACEMENTS = ("effective_field", "receptive_field", "centred")


@dataclass(frozen=True)
class AxisGeometry:
    """Cells along one axis: cell ``i`` sees input pixels ``[start + i * jump, stop + i * jump]``."""

    cells: int
    start: float
    stop: float
    jump: float

    def centre(self, index: float | torch.Tensor = 0.0):
        """Input-pixel coordinate of the centre of cell ``index`` (pixel centres at integers)."""
        return (self.start + self.stop) / 2.0 + index * self.jump

    def extent(self, index: int, size: int | None = None) -> tuple[float, float]:
        """Inclusive pixel range cell ``index`` sees, clipped to ``[0, size - 1]`` when ``size`` is given."""
        low, high = self.start + index * self.jump, self.stop + index * self.jump
        if size is not None:
            low, high = max(low, 0.0), min(high, size - 1.0)
        return low, high


@dataclass(frozen=True)
class CellGeometry:
    """Geometry of a layer's (h, w) grid on a square model input of ``input_size`` pixels."""

    y: AxisGeometry
    x: AxisGeometry
    input_size: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.y.cells, self.x.cells


def centred_geometry(grid: tuple[int, int], input_size: int) -> CellGeometry:
    """LayerCAM's convention: cell ``i`` centred at ``(i + 0.5) * s / h - 0.5``, one cell wide."""
    def axis(cells: int) -> AxisGeometry:
        jump = input_size / cells
        centre = 0.5 * jump - 0.5
        return AxisGeometry(cells, centre - (jump - 1) / 2, centre + (jump - 1) / 2, jump)
    return CellGeometry(axis(grid[0]), axis(grid[1]), input_size)


# ------------------------------------------------------------------------------------------------
# placement


def _cell_coordinates(axis: AxisGeometry, size: int, dtype, device) -> torch.Tensor:
    """Normalised ``grid_sample`` coordinates (align_corners=True) of input pixels 0..size-1 on the cells."""
    pixels = torch.arange(size, dtype=torch.float64, device=device)
    if axis.cells == 1:
        return torch.zeros(size, dtype=dtype, device=device)
    cell = (pixels - axis.centre(0)) / axis.jump
    cell = cell.clamp(0.0, axis.cells - 1.0)  # constant beyond the outermost centres, like interpolate
    return (2.0 * cell / (axis.cells - 1) - 1.0).to(dtype)


def place_on_input(maps: torch.Tensor, geometry: CellGeometry) -> torch.Tensor:
    """Resample layer maps (N, h, w) to the input grid (N, s, s) with each cell at its geometry's centre."""
    if maps.ndim != 3 or tuple(maps.shape[-2:]) != geometry.grid:
        raise LeamError(f"maps of shape {tuple(maps.shape)} do not match the layer grid {geometry.grid}")
    size = geometry.input_size
    ys = _cell_coordinates(geometry.y, size, maps.dtype, maps.device)
    xs = _cell_coordinates(geometry.x, size, maps.dtype, maps.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (s, s, 2) as (x, y)
    grid = grid.expand(maps.shape[0], size, size, 2)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def cached_geometries(model: nn.Module, layers: Sequence[str], input_size: int, placement: str,
                      probe_images: torch.Tensor | None = None) -> dict[str, CellGeometry] | None:
    """Geometries for ``leam.placement``, computed once per model, layers and placement.

    ``receptive_field``: traced (:func:`trace_cell_geometry`); ``effective_field``: measured on
    ``probe_images`` (:func:`effective_geometry`; required, and only the first call's probe counts);
    ``centred``: None, which tells :func:`leam.core.leam_maps` to use LayerCAM's own upsampling, so
    ``centred`` results are exactly those of other CAM tools.
    """
    check_choice("leam.placement", placement, PLACEMENTS)
    if placement == "centred":
        return None
    per_model = _CACHE.setdefault(model, {})
    key = (tuple(layers), int(input_size), placement)
    if key not in per_model:
        if placement == "effective_field":
            if probe_images is None:
                raise LeamError("leam.placement=effective_field needs probe images (real faces in the model "
                                "input) to measure where each layer's cells look")
            per_model[key] = effective_geometry(model, layers, input_size, probe_images)
        else:
            per_model[key] = trace_cell_geometry(model, layers, input_size)
    return per_model[key]


def cell_table(geometries: dict[str, CellGeometry] | None) -> dict | None:
    """Where each layer's cell (0, 0) sits and the cell spacing, in model-input pixels (None = centred):
    the record layers.json keeps of a run's placement."""
    if geometries is None:
        return None
    return {name: {"grid": list(g.grid), "centre_0": [round(g.y.centre(0), 4), round(g.x.centre(0), 4)],
                   "jump": [g.y.jump, g.x.jump]} for name, g in geometries.items()}


def geometries_from_cells(cells: dict | None, input_size: int) -> dict[str, CellGeometry] | None:
    """The cell geometries a leam run recorded (``layers.json`` ``cells``, written by :func:`cell_table`): its inverse.

    ``place_on_input`` needs only each axis's cell count, cell-0 centre and jump, which the table keeps
    (centres rounded to 1e-4 input pixels), so the maps are placed as the leam stage placed them without
    measuring ``effective_field`` again. None (a ``centred`` run) stays None.
    """
    if cells is None:
        return None

    def axis(count: int, centre: float, jump: float) -> AxisGeometry:
        return AxisGeometry(int(count), float(centre), float(centre), float(jump))

    return {name: CellGeometry(axis(c["grid"][0], c["centre_0"][0], c["jump"][0]),
                               axis(c["grid"][1], c["centre_0"][1], c["jump"][1]), int(input_size))
            for name, c in cells.items()}


def central_cells(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """The middle cell of an (h, w) grid, or the middle 2 (or 2 x 2) cells when a side is even."""
    h, w = grid
    return [(r, c) for r in sorted({(h - 1) // 2, h // 2}) for c in sorted({(w - 1) // 2, w // 2})]


def effective_geometry(model: nn.Module, layers: Sequence[str], input_size: int, probe_images: torch.Tensor
                       ) -> dict[str, CellGeometry]:
    """The traced geometry shifted to where the cells' input gradients actually sit on real faces.

    A deep cell's receptive field reaches far past the image, into zero padding that is lopsided under
    TF ``SAME`` and dlib's conventions, so the evidence it sees is pulled away from the field's geometric
    centre. Per layer and axis the shift is the mean, over the central cells (least clipped by the image),
    of the input-gradient centroid (:func:`gradient_centroid` over ``probe_images`` (N, 3, s, s) 0..255)
    minus the traced centre; the exact spacing (``jump``) is kept, so the map is moved, not rescaled.
    """
    traced = trace_cell_geometry(model, layers, input_size)
    result = {}
    for layer, geometry in traced.items():
        cells = central_cells(geometry.grid)
        measured = gradient_centroid(model, layer, cells, input_size, images=probe_images)
        shift_y = float((measured[:, 0] - torch.tensor([geometry.y.centre(r) for r, _ in cells])).mean())
        shift_x = float((measured[:, 1] - torch.tensor([geometry.x.centre(c) for _, c in cells])).mean())
        result[layer] = CellGeometry(
            AxisGeometry(geometry.y.cells, geometry.y.start + shift_y, geometry.y.stop + shift_y, geometry.y.jump),
            AxisGeometry(geometry.x.cells, geometry.x.start + shift_x, geometry.x.stop + shift_x, geometry.x.jump),
            input_size)
    return result


# ------------------------------------------------------------------------------------------------
# analytic tracing

RECEPTIVE_WINDOW = "receptive_window"
"""Module attribute that overrides the traced window of the module's output (see :func:`trace_cell_geometry`)."""

_UNKNOWN = "unknown"
"""Axis entry for an axis whose cells mix input positions in a way the tracer cannot follow."""

aten = torch.ops.aten


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a == _UNKNOWN or b == _UNKNOWN:
        return _UNKNOWN
    name_a, start_a, stop_a, jump_a = a
    name_b, start_b, stop_b, jump_b = b
    if name_a != name_b or not math.isclose(jump_a, jump_b):
        return _UNKNOWN
    return (name_a, min(start_a, start_b), max(stop_a, stop_b), jump_a)


def _windowed(entry, kernel: int, stride: int, padding: int, dilation: int):
    if entry is None or entry == _UNKNOWN:
        return entry
    name, start, stop, jump = entry
    return (name, start - padding * jump, stop + ((kernel - 1) * dilation - padding) * jump, stride * jump)


def _shifted(entry, cells: int, step: int = 1):
    if entry is None or entry == _UNKNOWN:
        return entry
    name, start, stop, jump = entry
    return (name, start + cells * jump, stop + cells * jump, jump * step)


def _pair(value, count: int) -> list[int]:
    if isinstance(value, int):
        return [value] * count
    value = list(value)
    return value * count if len(value) == 1 else value


class _GeometryTracer(TorchDispatchMode):
    """Follows the spatial geometry of every tensor through one forward pass (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[int, tuple[torch.Tensor, tuple]] = {}

    def geometry(self, tensor) -> tuple | None:
        entry = self.table.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is tensor else None

    def mark(self, tensor: torch.Tensor, axes: tuple) -> None:
        self.table[id(tensor)] = (tensor, axes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            self._propagate(func, args, kwargs, out)
        except (TypeError, ValueError, IndexError):  # an op signature we do not follow: geometry lost
            for tensor in _tensors(out):
                if any(self.geometry(a) is not None for a in _tensors(args)):
                    self.mark(tensor, (_UNKNOWN,) * tensor.ndim)
        return out

    def _propagate(self, func, args, kwargs, out) -> None:
        packet = func.overloadpacket
        first = self.geometry(args[0]) if args else None
        if packet is aten.convolution:
            if first is None:
                return
            x, weight = args[0], args[1]
            stride, padding, dilation, transposed = args[3], args[4], args[5], args[6]
            spatial = x.ndim - 2
            axes = list(first[:2])
            for i in range(spatial):
                entry = first[2 + i]
                axes.append(_UNKNOWN if transposed and entry is not None else
                            _windowed(entry, weight.shape[2 + i], _pair(stride, spatial)[i],
                                      _pair(padding, spatial)[i], _pair(dilation, spatial)[i]))
            axes[1] = None
            self.mark(out, tuple(axes))
        elif packet in (aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d):
            if first is None:
                return
            kernel = _pair(args[1], 2)
            stride = _pair(args[2] if len(args) > 2 and args[2] else kernel, 2)
            padding = _pair(args[3] if len(args) > 3 else 0, 2)
            dilation = _pair(args[4], 2) if packet is not aten.avg_pool2d and len(args) > 4 else [1, 1]
            axes = list(first[:-2]) + [_windowed(first[-2 + i], kernel[i], stride[i], padding[i], dilation[i])
                                       for i in range(2)]
            for tensor in _tensors(out)[:1]:
                self.mark(tensor, tuple(axes))
        elif packet in (aten.constant_pad_nd, aten.reflection_pad2d, aten.replication_pad2d):
            if first is None:
                return
            pads = list(args[1])
            axes = list(first)
            for k in range(len(pads) // 2):
                axes[-1 - k] = _shifted(axes[-1 - k], -pads[2 * k])
            self.mark(out, tuple(axes))
        elif packet is aten.slice:
            if first is None:
                return
            dim = args[1] if len(args) > 1 else 0
            start = args[2] if len(args) > 2 and args[2] is not None else 0
            step = args[4] if len(args) > 4 else 1
            size = args[0].shape[dim]
            start = min(max(start + size if start < 0 else start, 0), size)
            axes = list(first)
            axes[dim] = _shifted(axes[dim], start, step)
            self.mark(out, tuple(axes))
        elif packet is aten.select:
            if first is None:
                return
            axes = list(first)
            del axes[args[1]]
            self.mark(out, tuple(axes))
        elif packet is aten.permute:
            if first is not None:
                self.mark(out, tuple(first[d % len(first)] for d in args[1]))
        elif packet in (aten.transpose, aten.t):
            if first is not None:
                d0, d1 = (args[1], args[2]) if packet is aten.transpose else (0, 1)
                axes = list(first)
                axes[d0], axes[d1] = axes[d1], axes[d0]
                self.mark(out, tuple(axes))
        elif packet in (aten.view, aten._unsafe_view, aten.reshape, aten.unsqueeze, aten.squeeze,
                        aten.flatten, aten.expand):
            if first is not None:
                self.mark(out, _reshaped(first, tuple(args[0].shape), tuple(out.shape)))
        elif packet in (aten.mean, aten.sum, aten.amax, aten.amin):
            if first is None:
                return
            dims = args[1] if len(args) > 1 and args[1] is not None else list(range(len(first)))
            dims = {d % len(first) for d in ([dims] if isinstance(dims, int) else dims)}
            keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            axes = [None if d in dims else entry for d, entry in enumerate(first)] if keep else \
                [entry for d, entry in enumerate(first) if d not in dims]
            self.mark(out, tuple(axes))
        elif packet in (aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d):
            if first is not None:
                pooled = _tensors(out)[0]
                tail = [None if n == 1 else _UNKNOWN for n in pooled.shape[-2:]]
                self.mark(pooled, tuple(first[:-2]) + tuple(tail))
        elif packet is aten.cat:
            tensors = list(args[0])
            geometries = [self.geometry(t) for t in tensors]
            if all(g is None for g in geometries):
                return
            dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.ndim
            axes = []
            for d in range(out.ndim):
                entry = None
                for g in geometries:
                    entry = _union(entry, g[d] if g is not None else None)
                axes.append(_UNKNOWN if d == dim and entry is not None else entry)
            self.mark(out, tuple(axes))
        else:
            self._elementwise(args, kwargs, out)

    def _elementwise(self, args, kwargs, out) -> None:
        """Outputs shaped like their broadcast inputs take the union of the inputs' axes; others lose them."""
        inputs = [t for t in _tensors(args) + _tensors(kwargs) if self.geometry(t) is not None]
        if not inputs:
            return
        for tensor in _tensors(out):
            axes: list = [None] * tensor.ndim
            ok = all(t.ndim <= tensor.ndim and all(a == b or a == 1 for a, b in
                                                   zip(t.shape[::-1], tensor.shape[::-1])) for t in inputs)
            if not ok:
                self.mark(tensor, tuple(_UNKNOWN if n > 1 else None for n in tensor.shape))
                continue
            for t in inputs:
                geometry = self.geometry(t)
                offset = tensor.ndim - t.ndim
                for d, entry in enumerate(geometry):
                    if t.shape[d] == tensor.shape[offset + d]:
                        axes[offset + d] = _union(axes[offset + d], entry)
            self.mark(tensor, tuple(axes))


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _reshaped(axes: tuple, before: tuple[int, ...], after: tuple[int, ...]) -> tuple:
    """Axes survive a reshape when the same size keeps the same row-major element stride."""
    def trailing(shape):
        return [math.prod(shape[d + 1:]) for d in range(len(shape))]
    before_stride, after_stride = trailing(before), trailing(after)
    out: list = [None] * len(after)
    for d, entry in enumerate(axes):
        if entry is None or before[d] == 1:
            continue
        match = [e for e in range(len(after)) if after[e] == before[d] and after_stride[e] == before_stride[d]]
        if match:
            out[match[0]] = entry
        else:
            out = [_UNKNOWN if n > 1 else None for n in after]
            break
    return tuple(out)


def trace_cell_geometry(model: nn.Module, layers: Sequence[str], input_size: int) -> dict[str, CellGeometry]:
    """Exact cell geometry of each layer's output, from one forward pass on a grey input.

    model: takes (1, 3, input_size, input_size) float RGB 0..255 (the registry contract); layers: module
    paths whose outputs are (N, C, h, w). A module with a ``receptive_window`` attribute (``RECEPTIVE_WINDOW``:
    per spatial axis (kernel, stride, leading padding, dilation), e.g.
    :class:`leam.models.compile.LopsidedConv2d`, whose kernel carries zero taps) gives its (N, C, h, w)
    output the geometry of that window instead of the one its aten ops imply. Raises LeamError for a layer whose geometry cannot be followed
    (e.g. a transposed convolution or a spatial reshape) instead of guessing.
    """
    modules = dict(model.named_modules())
    bad = [name for name in layers if name not in modules]
    if bad:
        raise LeamError(f"unknown layer(s) {', '.join(map(repr, bad))}")
    captured: dict[str, tuple] = {}
    tracer = _GeometryTracer()

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if name not in captured and isinstance(output, torch.Tensor):
                captured[name] = (tuple(output.shape), tracer.geometry(output))
        return hook

    def windowed(module: nn.Module, inputs, output) -> None:
        geometry = tracer.geometry(inputs[0]) if inputs else None
        if geometry is not None and isinstance(output, torch.Tensor):
            spatial = [_windowed(entry, *window) for entry, window in zip(geometry[2:], module.receptive_window)]
            tracer.mark(output, (geometry[0], None, *spatial))

    # modules that declare their nominal window first, so a layer hook on the same module sees its geometry
    handles = [module.register_forward_hook(windowed) for module in modules.values()
               if getattr(module, RECEPTIVE_WINDOW, None) is not None]
    handles += [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    image = torch.full((1, 3, input_size, input_size), 127.5, device=device)
    try:
        with torch.no_grad(), tracer:
            tracer.mark(image, (None, None, ("y", 0.0, 0.0, 1.0), ("x", 0.0, 0.0, 1.0)))
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    result: dict[str, CellGeometry] = {}
    for name in layers:
        if name not in captured:
            raise LeamError(f"layer {name!r} did not run in the forward pass")
        shape, axes = captured[name]
        entries = axes[-2:] if axes is not None and len(shape) == 4 else None
        if entries is None or any(e is None or e == _UNKNOWN for e in entries) \
                or [e[0] for e in entries] != ["y", "x"]:
            raise LeamError(f"cannot follow the cell geometry of layer {name!r} (output {shape}); "
                            "use leam.placement=centred for this model")
        (_, y0, y1, yj), (_, x0, x1, xj) = entries
        result[name] = CellGeometry(AxisGeometry(shape[2], y0, y1, yj), AxisGeometry(shape[3], x0, x1, xj), input_size)
    return result


# ------------------------------------------------------------------------------------------------
# empirical measurements


class _LayerReached(Exception):
    """Raised by a forward hook once the probed layer has produced its output, to end the forward there."""


def _cell_input_gradients(model: nn.Module, layer: str, cells: Sequence[tuple[int, int]], images: torch.Tensor
                          ) -> torch.Tensor:
    """|d activation(cell) / d input| summed over channels, images and colour: (len(cells), s, s).

    One forward and backward pass: the images are repeated once per cell and each copy's gradient comes
    from its own cell only (samples are independent in eval mode). The forward stops at ``layer``
    (:class:`_LayerReached`): nothing after it reaches the gradient, so an early layer costs a fraction of
    a full pass and the result is the same to the bit.
    """
    module = model.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}

    def stop(_module, _inputs, output):
        store["out"] = output
        raise _LayerReached

    handle = module.register_forward_hook(stop)
    n = images.shape[0]
    try:
        x = images.detach().to(torch.float32).repeat(len(cells), 1, 1, 1).requires_grad_(True)
        with torch.enable_grad():
            try:
                model(x)
            except _LayerReached:
                pass
            if "out" not in store:
                raise LeamError(f"layer {layer!r} produced no output in a forward pass")
            out = store["out"]
            picked = torch.stack([out[k * n:(k + 1) * n, :, r, c] for k, (r, c) in enumerate(cells)])
            (grad,) = torch.autograd.grad(picked.abs().sum(), x)
    finally:
        handle.remove()
    return grad.abs().sum(dim=1).reshape(len(cells), n, *grad.shape[-2:]).sum(dim=1).cpu()  # small: (cells, s, s)


def gradient_support(model: nn.Module, layer: str, cells: Sequence[tuple[int, int]], input_size: int,
                     repeats: int = 4, seed: int = 0, images: torch.Tensor | None = None) -> torch.Tensor:
    """Bounding box of the non-zero input gradient of each cell: (len(cells), 4) as (y0, y1, x0, x1).

    The union over ``images`` (N, 3, s, s) 0..255 (real faces keep deep ReLUs alive) and ``repeats``
    seeded uniform-noise inputs, so every path carries gradient on some input. This is the empirical
    counterpart of :meth:`AxisGeometry.extent` clipped to the image.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((repeats, 3, input_size, input_size), generator=generator) * 255.0
    images = noise if images is None else torch.cat([images.to(noise.dtype), noise])
    grads = _cell_input_gradients(model, layer, cells, images)
    boxes = []
    for grad in grads:
        ys = torch.nonzero(grad.sum(dim=1) > 0).flatten()
        xs = torch.nonzero(grad.sum(dim=0) > 0).flatten()
        if len(ys) == 0:
            raise LeamError(f"cell of layer {layer!r} has no input gradient")
        boxes.append([ys.min(), ys.max(), xs.min(), xs.max()])
    return torch.tensor(boxes, dtype=torch.float64)


def gradient_centroid(model: nn.Module, layer: str, cells: Sequence[tuple[int, int]], input_size: int,
                      images: torch.Tensor | None = None) -> torch.Tensor:
    """Centre of mass (y, x) in input pixels of |d cell / d input|: (len(cells), 2).

    Summed over ``images`` (N, 3, s, s) 0..255, by default one constant grey input. This is the *effective*
    receptive field: weight- and input-dependent (on grey input some networks' deep units are dead), a
    diagnostic beside the exact geometry, not used for placement.
    """
    if images is None:
        images = torch.full((1, 3, input_size, input_size), 127.5)
    grads = _cell_input_gradients(model, layer, cells, images)
    coords = torch.arange(input_size, dtype=grads.dtype)
    mass = grads.sum(dim=(1, 2)).clamp_min(torch.finfo(grads.dtype).tiny)
    return torch.stack([(grads.sum(dim=2) * coords).sum(dim=1) / mass,
                        (grads.sum(dim=1) * coords).sum(dim=1) / mass], dim=1).double()
