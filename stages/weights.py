"""Stage `weights`: convert pretrained networks into checksummed PyTorch files under data/models/.

dlib's face-recognition ResNet is read from ``dlib_face_recognition_resnet_model_v1.dat`` (shipped in the
PyPI package ``face_recognition_models``; nothing is downloaded), converted to ``data/models/dlib_resnet.pt``
and recorded in ``data/models/weights.json`` as ``name -> {file, sha256, source, source_sha256}``.
``ModelSpec.load`` refuses a weights file whose sha256 differs from this record.

Examples:
  python -m stages.weights                 # convert into data/models/
  python -m stages.weights --out /tmp/w    # somewhere else
"""

from __future__ import annotations

import argparse
import importlib.util
import io
from pathlib import Path
import logging

import torch

from leam.assets import dlib_model_path
from leam.cli import run_stage, stage_parser
from leam.io import load_params, param, sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic
from leam.models import dlib_resnet
from leam.models.dlib_format import load_network

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


def human_models_hook(params: dict, out_dir) -> dict:
    """HOOK (TF.js models): entries from ``leam.models.tfjs.fetch_human_models`` when enabled.

    Runs only if ``weights.human_models.enabled`` is true and the module provides the function; it returns
    ``name -> weights.json entry`` for the files it wrote under ``out_dir``.
    """
    if not param(params, "weights.human_models.enabled", False):
        return {}
    if importlib.util.find_spec("leam.models.tfjs") is None:
        log.warning("weights.human_models.enabled is true but leam.models.tfjs is missing; skipped")
        return {}
    from leam.models import tfjs
    fetch = getattr(tfjs, "fetch_human_models", None)
    if fetch is None:
        log.warning("leam.models.tfjs has no fetch_human_models yet; human models skipped")
        return {}
    return dict(fetch(params, out_dir))


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    out_dir = Path(args.out)
    entries = {dlib_resnet.NAME: convert_dlib_resnet(out_dir)}
    entries.update(human_models_hook(params, out_dir))
    write_json_atomic(out_dir / dlib_resnet.WEIGHTS_INDEX, entries)
    log.info("wrote %d model(s) to %s: %s", len(entries), out_dir, ", ".join(sorted(entries)))


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("weights", __doc__)
    parser.add_argument("--out", default="data/models", help="output folder (default: data/models)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("weights", main, build_parser()))
