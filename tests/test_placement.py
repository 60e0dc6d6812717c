"""leam.placement: exact cell geometry (toy networks of known padding, real networks against their input
gradients) and placing coarse maps at their cells' centres."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from leam import core, embedding
from leam.errors import LeamError
from leam.models import graph as g
from leam.models.compile import LopsidedConv2d, compile_graph
from leam.models.registry import available_models
from leam.placement import (
    AxisGeometry,
    CellGeometry,
    cached_geometries,
    centred_geometry,
    effective_geometry,
    gradient_centroid,
    gradient_support,
    place_on_input,
    trace_cell_geometry,
)
from tests.test_core import load_registered


class Chain(nn.Module):
    """Toy input contract (N, 3, s, s) 0..255 -> (N, C); ``body`` is the part whose geometry is tested."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / 255.0).mean(dim=(2, 3))


class TfSame(nn.Module):
    """TensorFlow's SAME padding for a 3x3/2 convolution: the odd pixel goes at the bottom/right."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Residual(nn.Module):
    """A dlib-style downsampling block: 3x3/2 unpadded main path + 2x2/2 average-pooled shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Conv2d(channels, channels, 3, stride=2)
        self.shortcut = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)
        short = self.shortcut(x)
        return short[..., :main.shape[-2], :main.shape[-1]] + main


class Nhwc(nn.Module):
    """A conv run in NHWC layout and back (the TF.js executor's permutes)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1).contiguous()
        return (y * 2.0).permute(0, 3, 1, 2)


def uniform(module: nn.Module) -> nn.Module:
    """Positive constant weights and no bias: the input gradient of a cell is then symmetric about its centre."""
    for name, parameter in module.named_parameters():
        nn.init.constant_(parameter, 0.0 if name.endswith("bias") else 1.0)
    return module.eval().requires_grad_(False)


TOYS = {
    # name: (body, input size, expected cell-0 centre, expected jump)
    "symmetric_pad": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), 16, 0.0, 2.0),
    "no_pad": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)), 17, 1.0, 2.0),
    "tf_same": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), TfSame(4)), 16, 1.0, 2.0),
    "conv_pool": (lambda: nn.Sequential(nn.Conv2d(3, 4, 7, stride=2), nn.AvgPool2d(3, stride=2)), 40, 5.0, 4.0),
    "nhwc": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), Nhwc(4)), 16, 0.0, 2.0),
}


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_geometry_is_exact(name):
    body, size, centre, jump = TOYS[name]
    model = uniform(Chain(body()))
    geometry = trace_cell_geometry(model, ["body"], size)["body"]
    for axis in (geometry.y, geometry.x):
        assert axis.centre(0) == pytest.approx(centre) and axis.jump == pytest.approx(jump)
    # With uniform positive weights, the input gradient of an interior cell is centred on the cell.
    h, w = geometry.grid
    cells = [(h // 2, w // 2), (h // 2 - 1, w // 2 + 1)]
    measured = gradient_centroid(model, "body", cells, size)
    for (i, j), (y, x) in zip(cells, measured.tolist()):
        assert y == pytest.approx(geometry.y.centre(i), abs=1e-4)
        assert x == pytest.approx(geometry.x.centre(j), abs=1e-4)


def test_residual_branches_unite_their_extents():
    model = uniform(Chain(Residual(3)))
    geometry = trace_cell_geometry(model, ["body"], 16)["body"]
    # main path: [0, 2] + 2i; shortcut: [0, 1] + 2i -> union [0, 2]
    assert (geometry.x.start, geometry.x.stop, geometry.x.jump) == (0.0, 2.0, 2.0)
    box = gradient_support(model, "body", [(3, 3)], 16)[0].tolist()
    assert box == [6.0, 8.0, 6.0, 8.0]


def test_centred_geometry_reproduces_layercam_upsampling():
    for grid, size in [((7, 7), 112), ((4, 4), 150), ((72, 72), 150), ((1, 1), 10), ((3, 5), 224)]:
        maps = torch.rand(2, *grid, generator=torch.Generator().manual_seed(grid[0]))
        placed = place_on_input(maps, centred_geometry(grid, size))
        reference = F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        torch.testing.assert_close(placed, reference, atol=1e-5, rtol=1e-5)


def test_a_hot_cell_lands_at_its_receptive_field_centre():
    geometry = CellGeometry(AxisGeometry(4, -3.0, 11.0, 8.0), AxisGeometry(4, 1.0, 9.0, 8.0), 32)
    maps = torch.zeros(1, 4, 4)
    maps[0, 2, 1] = 1.0
    placed = place_on_input(maps, geometry)[0]
    peak = divmod(int(placed.argmax()), 32)
    assert peak == (int(geometry.y.centre(2)), int(geometry.x.centre(1)))  # (20, 13)
    assert float(placed.max()) == pytest.approx(1.0)


def test_untraceable_layers_are_one_line_errors():
    class Upsampler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 3, 2, stride=2)

        def forward(self, x):
            return self.up(x).mean(dim=(2, 3))

    model = Upsampler().eval().requires_grad_(False)
    with pytest.raises(LeamError, match="leam.placement=centred"):
        trace_cell_geometry(model, ["up"], 8)
    with pytest.raises(LeamError, match="leam.placement"):
        cached_geometries(model, ["up"], 8, "middle")
    assert cached_geometries(model, ["up"], 8, "centred") is None


def test_lopsided_conv_keeps_the_geometry_of_its_original_kernel():
    """TF SAME stride-2 convs (pads (0, 1)) compile to :class:`LopsidedConv2d` (a 4x4 kernel with a zero first row
    and column, padding 1): the traced geometry of every layer is the interpreter's (3x3 kernel, pad 0 before),
    the traced extents end where the cells' input gradients end, and without its ``receptive_window`` the
    grown kernel would reach one input step further up and left per conv."""
    rng = np.random.default_rng(0)

    def conv(cin: int, cout: int, groups: int = 1) -> g.Conv:
        weight = rng.normal(size=(cout, cin // groups, 3, 3)).astype(np.float32)
        return g.Conv(weight, rng.normal(size=cout).astype(np.float32), (2, 2), (1, 1), groups, "same")

    ops = {"c1": conv(3, 4), "dw": conv(4, 4, groups=4), "c3": conv(4, 4)}
    nodes = [g.Node("c1", ("x",), "a"), g.Node("dw", ("a",), "b"), g.Node("c3", ("b",), "c")]
    graph = g.GraphModule(ops, nodes, "x", "c", g.PixelNormalisation(), {"first": "a", "depthwise": "b", "last": "c"})
    size, layers = 32, ["first", "depthwise", "last"]
    compiled = compile_graph(graph, size, channels_last=True)
    assert sum(isinstance(m, LopsidedConv2d) for m in compiled.modules()) == 3
    assert not any(isinstance(m, nn.ZeroPad2d) for m in compiled.modules())
    want, got = trace_cell_geometry(graph, layers, size), trace_cell_geometry(compiled, layers, size)
    assert got == want
    assert want["first"].y.start == 0.0 and want["first"].y.stop == 2.0 and want["last"].x.jump == 8.0
    (y0, y1, x0, x1), = gradient_support(compiled, "last", [(1, 1)], size).tolist()
    assert (y0, y1, x0, x1) == (*want["last"].y.extent(1), *want["last"].x.extent(1))
    for module in compiled.modules():
        if isinstance(module, LopsidedConv2d):
            module.receptive_window = None
    nominal = trace_cell_geometry(compiled, layers, size)
    for layer, reach in zip(layers, (1.0, 3.0, 7.0)):  # one zero tap per conv, at its input's pixel step
        assert nominal[layer].y.stop == want[layer].y.stop and nominal[layer].y.start == want[layer].y.start - reach


@pytest.mark.slow
@pytest.mark.parametrize("name", available_models())
def test_traced_extents_equal_the_input_gradient_support(name, weights_dir, real_faces):
    """Every default layer of every registered network: the traced extent of the first and last cell, where
    it ends inside the image, is exactly where that cell's input gradient ends (on real faces + noise)."""
    spec, model = load_registered(name, weights_dir)
    size = spec.input_size
    faces, _ = embedding.to_model_input(spec, real_faces["frames"][:3], real_faces["landmarks"][:3], 0.5)
    geometries = trace_cell_geometry(model, spec.layers, size)
    checked = 0
    for layer, geometry in geometries.items():
        h, w = geometry.grid
        cells = [(0, 0), (h - 1, w - 1)]
        boxes = gradient_support(model, layer, cells, size, repeats=1, images=faces)
        for (i, j), (y0, y1, x0, x1) in zip(cells, boxes.tolist()):
            (ey0, ey1), (ex0, ex1) = geometry.y.extent(i), geometry.x.extent(j)
            for traced, measured in ((ey0, y0), (ex0, x0)):
                if traced > 0:
                    assert measured == traced, (layer, "start", traced, measured)
                    checked += 1
            for traced, measured in ((ey1, y1), (ex1, x1)):
                if traced < size - 1:
                    assert measured == traced, (layer, "stop", traced, measured)
                    checked += 1
    assert checked >= 4


def test_placement_moves_cells_without_changing_them(weights_dir, real_faces):
    """mobileface's deepest layer on a real pair: the placed map, read at each cell's receptive-field centre
    (integers for this network), is the LayerCAM map on the layer grid; the centred map differs."""
    spec, model = load_registered("mobileface", weights_dir)
    frames, landmarks = real_faces["frames"][:2], real_faces["landmarks"][:2]
    embeddings = embedding.embed_frames(model, spec, frames, landmarks, 0.5)
    inputs, _ = embedding.to_model_input(spec, frames[:1], landmarks[:1], 0.5)
    layer = spec.layers[-1]
    geometry = cached_geometries(model, [layer], spec.input_size, "receptive_field")[layer]
    h, w = geometry.grid
    on_grid = CellGeometry(AxisGeometry(h, 0.0, 0.0, 1.0), AxisGeometry(w, 0.0, 0.0, 1.0), h)
    raw = core.leam_maps(model, inputs, embeddings[1:2], [layer], geometries={layer: on_grid}).maps[0, 0]
    placed = core.leam_maps(model, inputs, embeddings[1:2], [layer], geometries={layer: geometry}).maps[0, 0]
    centred = core.leam_maps(model, inputs, embeddings[1:2], [layer]).maps[0, 0]
    rows = [int(geometry.y.centre(i)) for i in range(h)]
    cols = [int(geometry.x.centre(j)) for j in range(w)]
    assert all(geometry.y.centre(i) == r for i, r in enumerate(rows)) and max(rows + cols) < spec.input_size
    assert float(raw.max()) > 0
    torch.testing.assert_close(placed[rows][:, cols], raw, atol=1e-6, rtol=1e-5)
    assert (placed - centred).abs().max() > 0.05 * raw.max()


def test_effective_geometry_keeps_the_spacing_and_measures_the_shift():
    """Uniform positive weights and central cells that see only real pixels: the input gradient is flat over
    the receptive field, so the measured centre is the traced one and the spacing is the traced jump;
    without probe images the placement is a one-line error."""
    body, size, _, _ = TOYS["conv_pool"]
    model = uniform(Chain(body()))
    probe = torch.rand((2, 3, size, size), generator=torch.Generator().manual_seed(3)) * 255
    traced = trace_cell_geometry(model, ["body"], size)["body"]
    measured = effective_geometry(model, ["body"], size, probe)["body"]
    assert measured.x.jump == traced.x.jump and measured.y.jump == traced.y.jump
    assert measured.x.centre(0) == pytest.approx(traced.x.centre(0), abs=1e-4)
    assert measured.y.centre(0) == pytest.approx(traced.y.centre(0), abs=1e-4)
    with pytest.raises(LeamError, match="probe images"):
        cached_geometries(uniform(Chain(body())), ["body"], size, "effective_field")


def test_cell_gradients_stop_the_forward_at_the_layer_and_match_a_full_pass(weights_dir, real_faces):
    """faceres (compiled TF.js graph) on real faces, an early layer: modules after it never run, and the
    per-cell input gradients equal a naive full forward + backward of the same cells, to the bit."""
    from leam.placement import _cell_input_gradients

    spec, model = load_registered("faceres", weights_dir)
    faces, _ = embedding.to_model_input(spec, real_faces["frames"][:2], real_faces["landmarks"][:2], 0.5)
    layer = spec.layers[1]
    cells = [(3, 4), (10, 2)]
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append("output"))  # the whole network's output
    try:
        fast = _cell_input_gradients(model, layer, cells, faces)
    finally:
        handle.remove()
    assert calls == []

    store = {}
    tap = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: store.setdefault("out", out))
    try:
        x = faces.detach().to(torch.float32).repeat(len(cells), 1, 1, 1).requires_grad_(True)
        model(x)
    finally:
        tap.remove()
    n = faces.shape[0]
    picked = torch.stack([store["out"][k * n:(k + 1) * n, :, r, c] for k, (r, c) in enumerate(cells)])
    (grad,) = torch.autograd.grad(picked.abs().sum(), x)
    naive = grad.abs().sum(dim=1).reshape(len(cells), n, *grad.shape[-2:]).sum(dim=1)
    assert float(naive.sum()) > 0
    assert torch.equal(fast, naive)
