"""The TF.js importer on tiny generated graphs, against independent numpy computations in NHWC."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from leam.errors import LeamError
from leam.models.graph import same_padding
from leam.models.tfjs_import import tfjs_module


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _graph(nodes: list[dict], weights: dict[str, np.ndarray]) -> tuple[dict, dict]:
    consts = [{"name": name, "op": "Const", "attr": {}} for name in weights]
    return {"format": "graph-model", "modelTopology": {"node": consts + nodes}}, weights


def _placeholder(h: int, w: int, c: int) -> dict:
    dims = [{"size": s} for s in ("-1", str(h), str(w), str(c))]
    return {"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": dims}}}}


def _conv_attrs(stride: int, padding: str = "SAME", fused: tuple[str, ...] = (), num_args: int = 0) -> dict:
    attrs = {"strides": _ints([1, stride, stride, 1]), "padding": _s(padding), "data_format": _s("NHWC"),
             "dilations": _ints([1, 1, 1, 1])}
    if fused:
        attrs["fused_ops"] = {"list": {"s": [_s(f)["s"] for f in fused]}}
        attrs["num_args"] = {"i": str(num_args)}
    return attrs


def _same_pad_nhwc(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """Reference TF SAME padding written from TF's definition (extra pixel after)."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])


def _patches(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """(N, Ho, Wo, k, k, C) windows of an already padded NHWC array."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.empty((n, ho, wo, k, k, c), x.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, :, i, j] = x[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
    return out


def _conv_ref(x, kernel, stride):  # kernel HWIO
    p = _patches(_same_pad_nhwc(x, kernel.shape[0], stride), kernel.shape[0], stride)
    return np.einsum("nhwijc,ijco->nhwo", p, kernel)


def _depthwise_ref(x, kernel, stride):  # kernel H, W, C, M -> channel c*M + m
    p = _patches(_same_pad_nhwc(x, kernel.shape[0], stride), kernel.shape[0], stride)
    out = np.einsum("nhwijc,ijcm->nhwcm", p, kernel)
    return out.reshape(*out.shape[:3], -1)


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("size,stride,expected", [(8, 2, (0, 1)), (7, 2, (1, 1)), (8, 1, (1, 1)), (4, 2, (0, 1))])
def test_same_padding_puts_the_odd_pixel_after(size, stride, expected):
    assert same_padding(size, 3, stride) == expected


def test_conv2d_same_stride2_matches_reference_with_asymmetric_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    model, weights = _graph([_placeholder(8, 8, 3),
                             {"name": "conv", "op": "Conv2D", "input": ["x", "k"], "attr": _conv_attrs(2)}],
                            {"k": kernel})
    module = tfjs_module(model, weights, "conv")
    got = _nhwc(module(_nchw(x)))
    want = _conv_ref(x, kernel, 2)
    assert got.shape == (2, 4, 4, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a symmetric padding would shift the result by one pixel: make sure the test can tell
    shifted = np.einsum("nhwijc,ijco->nhwo", _patches(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]), 3, 2), kernel)
    assert np.abs(shifted[:, :4, :4] - want).max() > 0.1


def test_depthwise_multiplier_and_fused_prelu_match_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    bias = rng.normal(size=(8,)).astype(np.float32)
    alpha = rng.uniform(0.1, 0.5, size=(8,)).astype(np.float32)
    node = {"name": "dw", "op": "FusedDepthwiseConv2dNative", "input": ["x", "k", "b", "a"],
            "attr": _conv_attrs(2, fused=("BiasAdd", "Prelu"), num_args=2)}
    module = tfjs_module(*_graph([_placeholder(6, 6, 4), node], {"k": kernel, "b": bias, "a": alpha}), "dw")
    pre = _depthwise_ref(x, kernel, 2) + bias
    want = np.where(pre >= 0, pre, pre * alpha)
    np.testing.assert_allclose(_nhwc(module(_nchw(x))), want, atol=1e-5)


def test_fused_conv_relu_mean_reshape_and_fused_matmul_match_reference():
    """Conv(+BiasAdd+Relu) -> spatial Mean -> MatMul(+BiasAdd); and a Reshape flatten in NHWC order."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 5, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    dense = rng.normal(size=(4, 6)).astype(np.float32)
    dense_bias = rng.normal(size=(6,)).astype(np.float32)
    flat = rng.normal(size=(3 * 3 * 4, 2)).astype(np.float32)
    nodes = [
        _placeholder(5, 5, 2),
        {"name": "conv", "op": "_FusedConv2D", "input": ["x", "k", "b"],
         "attr": _conv_attrs(2, fused=("BiasAdd", "Relu"), num_args=1)},
        {"name": "mean", "op": "Mean", "input": ["conv", "axes"], "attr": {"keep_dims": {"b": False}}},
        {"name": "fc", "op": "_FusedMatMul", "input": ["mean", "d", "db"],
         "attr": {"fused_ops": {"list": {"s": [_s("BiasAdd")["s"]]}}, "num_args": {"i": "1"}}},
        {"name": "flat", "op": "Reshape", "input": ["conv", "shape:0"], "attr": {}},
        {"name": "proj", "op": "MatMul", "input": ["flat", "f", "^conv"], "attr": {}},
    ]
    weights = {"k": kernel, "b": bias, "axes": np.array([1, 2], np.int32), "d": dense, "db": dense_bias,
               "shape": np.array([-1, 36], np.int32), "f": flat}
    module = tfjs_module(*_graph(nodes, weights), "fc")
    conv = np.maximum(_conv_ref(x, kernel, 2) + bias, 0)
    got = module.run(_nchw(x), ["fc", "conv"])
    got["proj"] = tfjs_module(*_graph(nodes, weights), "proj")(_nchw(x))
    np.testing.assert_allclose(_nhwc(got["conv"]), conv, atol=1e-5)
    np.testing.assert_allclose(got["fc"].numpy(), conv.mean((1, 2)) @ dense + dense_bias, atol=1e-5)
    np.testing.assert_allclose(got["proj"].numpy(), conv.reshape(3, -1) @ flat, atol=1e-4)


def test_constants_broadcast_and_pad_follow_nhwc_semantics():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    scale = rng.normal(size=(3,)).astype(np.float32)
    nodes = [_placeholder(4, 4, 3),
             {"name": "sub", "op": "Sub", "input": ["x", "c"], "attr": {}},
             {"name": "mul", "op": "Mul", "input": ["s", "sub"], "attr": {}},
             {"name": "lo", "op": "Minimum", "input": ["mul", "six"], "attr": {}},
             {"name": "pad", "op": "Pad", "input": ["lo", "p"], "attr": {}}]
    weights = {"c": np.array(0.5, np.float32), "s": scale, "six": np.array(1.0, np.float32),
               "p": np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32)}
    module = tfjs_module(*_graph(nodes, weights), "pad")
    want = np.pad(np.minimum(scale * (x - 0.5), 1.0), [(0, 0), (1, 2), (0, 1), (0, 0)])
    np.testing.assert_allclose(_nhwc(module(_nchw(x))), want, atol=1e-6)


def test_gradients_reach_a_tapped_intermediate_activation():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    nodes = [_placeholder(8, 8, 3),
             {"name": "conv", "op": "Conv2D", "input": ["x", "k"], "attr": _conv_attrs(2)},
             {"name": "act", "op": "Relu", "input": ["conv"], "attr": {}},
             {"name": "out", "op": "Mean", "input": ["act", "axes"], "attr": {"keep_dims": {"b": False}}}]
    module = tfjs_module(*_graph(nodes, {"k": kernel, "axes": np.array([1, 2], np.int32)}), "out",
                             taps={"block1": "conv"})
    assert all(not p.requires_grad for p in module.parameters())
    seen = {}

    def keep(module_, inputs, output):
        output.retain_grad()
        seen["a"] = output

    module.get_submodule("block1").register_forward_hook(keep)
    x = torch.from_numpy(rng.normal(size=(1, 3, 8, 8)).astype(np.float32)).requires_grad_(True)
    module(x).sum().backward()
    grad = seen["a"].grad
    assert grad is not None and grad.shape == (1, 4, 4, 4)
    # d(sum of channel means of relu(a))/da = 1/16 where a > 0, else 0
    expected = (seen["a"].detach() > 0).float() / 16
    torch.testing.assert_close(grad, expected)


def test_unsupported_op_and_bad_tap_are_one_line_errors():
    nodes = [_placeholder(4, 4, 1), {"name": "y", "op": "NonMaxSuppressionV5", "input": ["x"], "attr": {}}]
    with pytest.raises(LeamError, match="unsupported TF.js op 'NonMaxSuppressionV5'"):
        tfjs_module(*_graph(nodes, {}), "y")
    ok = [_placeholder(4, 4, 1), {"name": "y", "op": "Relu", "input": ["x"], "attr": {}}]
    with pytest.raises(LeamError, match="tap name 'a.b'"):
        tfjs_module(*_graph(ok, {}), "y", taps={"a.b": "y"})
    with pytest.raises(LeamError, match="not in the graph"):
        tfjs_module(*_graph(ok, {}), "missing")


@pytest.mark.parametrize("size,padding", [(7, "SAME"), (8, "SAME"), (7, "VALID")])
def test_conv2d_backprop_input_is_the_gradient_of_the_forward_conv(size, padding):
    """TF's Conv2DBackpropInput is, by definition, d(conv(x) . g) / dx: compared with torch autograd of the
    forward TF convolution (SAME: the odd padding pixel after) on an input of ``size``."""
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)        # forward conv HWIO: 2 -> 4 channels
    pads = [same_padding(size, 3, 2) if padding == "SAME" else (0, 0)] * 2
    forward_out = (size + sum(pads[0]) - 3) // 2 + 1
    grad = rng.normal(size=(2, forward_out, forward_out, 4)).astype(np.float32)
    x = torch.zeros(2, 2, size, size, requires_grad=True)
    padded = torch.nn.functional.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    out = torch.nn.functional.conv2d(padded, torch.from_numpy(kernel.transpose(3, 2, 0, 1)), stride=2)
    (out * torch.from_numpy(grad).permute(0, 3, 1, 2)).sum().backward()
    expected = x.grad.permute(0, 2, 3, 1).numpy()
    sizes = np.array([2, size, size, 2], np.int32)
    node = {"name": "y", "op": "Conv2DBackpropInput", "input": ["sizes", "k", "x"],
            "attr": {**_conv_attrs(2, padding)}}
    model, weights = _graph([_placeholder(forward_out, forward_out, 4), node], {"sizes": sizes, "k": kernel})
    with torch.no_grad():
        ours = tfjs_module(model, weights, "y")(torch.from_numpy(grad).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_pools_resize_and_addn_follow_tf():
    """AvgPool SAME divides by the real pixels of each window; MaxPool; ResizeBilinear with align_corners maps
    corners onto corners; AddN sums; the legacy resize rule is refused by name."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    pool = {"ksize": _ints([1, 2, 2, 1]), "strides": _ints([1, 2, 2, 1]), "padding": _s("SAME"),
            "data_format": _s("NHWC")}
    nodes = [_placeholder(5, 5, 2),
             {"name": "avg", "op": "AvgPool", "input": ["x"], "attr": pool},
             {"name": "max", "op": "MaxPool", "input": ["x"], "attr": pool},
             {"name": "up", "op": "ResizeBilinear", "input": ["x", "size"], "attr": {"align_corners": {"b": True}}},
             {"name": "sum", "op": "AddN", "input": ["x", "x", "x"], "attr": {}}]
    model, weights = _graph(nodes, {"size": np.array([9, 9], np.int32)})
    values = tfjs_module(model, weights, "sum", extra_outputs=("avg", "max", "up")).run(
        torch.from_numpy(x).permute(0, 3, 1, 2), ["avg", "max", "up", "sum"])
    got = {k: v.permute(0, 2, 3, 1).numpy() for k, v in values.items()}
    assert got["avg"].shape == (1, 3, 3, 2)
    np.testing.assert_allclose(got["avg"][0, 2, 2], x[0, 4, 4], rtol=1e-6)            # a 1-pixel window
    np.testing.assert_allclose(got["avg"][0, 0, 0], x[0, :2, :2].mean((0, 1)), rtol=1e-6)
    np.testing.assert_allclose(got["max"][0, 1, 2], x[0, 2:4, 4].max(0), rtol=1e-6)
    np.testing.assert_allclose(got["up"][0, ::2, ::2], x[0], rtol=1e-5, atol=1e-6)    # 9 = 2 * 5 - 1: corners align
    np.testing.assert_allclose(got["sum"], 3 * x, rtol=1e-6)
    nodes[3]["attr"] = {}
    with pytest.raises(LeamError, match="legacy rule"):
        tfjs_module(*_graph(nodes, {"size": np.array([9, 9], np.int32)}), "up")
