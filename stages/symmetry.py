"""Stage `symmetry`: are LEAM maps of aligned faces left/right balanced, under each placement?

For a seeded subset of photos (``symmetry.max_images`` per model) this stage computes the LEAM maps of
every layer (and the overall map) once per ``leam.placement`` (``effective_field``, ``receptive_field``
and ``centred``), on the photo and on its mirror image, and measures (``leam.metrics.symmetry``): the L/R
mass ratio of the top-``threshold`` pixels for eyes, brows, mouth halves and face halves, and the flip
bias (horizontal shift of the map against the mirrored face's map mirrored back, frame pixels). Maps are
compared in the analysis frame at full resolution with the parse stage's labels. It is the evidence for
the default ``leam.placement`` (README, Regions page). The control (``symmetry.control_images`` of those
photos, :func:`leam.metrics.symmetry.symmetry_control`) makes each exactly symmetric in the model input
and measures how far its maps sit off the centre, for the trained network and for a copy with mirror-
symmetrised kernels, with the same cells placed the same way: the copy keeps only the architecture's lean,
so where the two differ the trained weights, not the placement, choose the side.

Reads  data/aligned/, data/parsing/, data/models/, data/leam/<model>/layers.json (the cells the leam stage
       placed its maps with: reused for that placement instead of measured again)
Writes data/symmetry/per_image.csv        one row per model/placement/layer/image
       data/symmetry/summary.csv          ratios and flip bias with 95% CIs
       data/symmetry/control.csv          one row per model/weights/placement/layer/image of the control
       data/symmetry/control_summary.csv  centre offsets and half L/R ratios with 95% CIs
       metrics/symmetry.json

Examples:
  python -m stages.symmetry
  python -m stages.symmetry --out /tmp/symmetry --metrics /tmp/symmetry.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.dataset_maps import probe_photos
from leam.device import resolve_device
from leam.errors import LeamError
from leam.io import read_aligned, read_json_checked, read_parsing, write_csv_atomic, write_json_atomic
from leam.metrics.symmetry import (
    model_symmetry,
    placement_geometries,
    summarise_control,
    summarise_symmetry,
    symmetry_control,
    symmetry_metrics,
)
from leam.models.registry import get_spec, register_zoo, resolve_layers
from leam.placement import PLACEMENTS

log = logging.getLogger("leam.symmetry")


def leam_record(leam_dir: str, model: str) -> dict | None:
    """The leam stage's layers.json of ``model``, or None (logged) when that stage has not run."""
    path = Path(leam_dir) / model / "layers.json"
    if not path.is_file():
        log.info("%s: no %s, every placement's cells are measured here", model, path)
        return None
    return read_json_checked(path, ("layers", "placement", "cells"), stage=f"leam@{model}")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    register_zoo(config.model_zoo)
    device = resolve_device(config.symmetry.device, "symmetry.device")
    index, frames, landmarks = read_aligned(args.aligned, config.align.frame_size)
    labels, parsed, _ = read_parsing(args.parsing_dir)
    label_row = dict(zip(parsed.image_id[parsed.parsed.astype(bool)], parsed.row[parsed.parsed.astype(bool)]))
    aligned_count = len(index)
    probe = probe_photos(index, frames, landmarks, config.leam.probe_images)  # the leam stage's probe photos
    index = index[index.image_id.isin(label_row)].reset_index(drop=True)
    if index.empty:
        raise LeamError(f"no aligned photo has parser labels in {args.parsing_dir}; rerun `dvc repro parse`")
    rows = index.row.to_numpy()
    frames, landmarks = frames[rows], landmarks[rows]
    labels = np.asarray(labels[index.image_id.map(label_row).to_numpy()])
    log.info("%d aligned photos have parser labels (%d without are left out)", len(index), aligned_count - len(index))
    per_image, control = [], []
    common = {"padding": config.align.padding, "threshold": config.threshold, "seed": config.seed, "device": device}
    for name in config.models:
        spec = get_spec(name)
        model = spec.load(Path(args.weights))
        layers = resolve_layers(spec, model, config.leam.layers.get(name))
        geometries = placement_geometries(model, spec, layers, probe, config.align.padding, leam_record(args.leam_dir, name))
        per_image.append(model_symmetry(model, spec, layers, frames, landmarks, labels, index, geometries, config.leam,
                                        max_images=config.symmetry.max_images, **common))
        if config.symmetry.control_images:
            control.append(symmetry_control(model, spec, layers, frames, landmarks, index, geometries, config.leam,
                                            max_images=config.symmetry.control_images, **common))
    per_image = pd.concat(per_image, ignore_index=True)
    summary = summarise_symmetry(per_image, config.symmetry.bootstrap, config.seed)
    control = pd.concat(control, ignore_index=True) if control else pd.DataFrame()
    control_summary = summarise_control(control, config.symmetry.bootstrap, config.seed) if len(control) else None
    out = Path(args.out)
    write_csv_atomic(out / "per_image.csv", per_image)
    write_csv_atomic(out / "summary.csv", summary)
    for stale in ("control.csv", "control_summary.csv"):  # a run without the control leaves none behind
        (out / stale).unlink(missing_ok=True)
    if control_summary is not None:
        write_csv_atomic(out / "control.csv", control)
        write_csv_atomic(out / "control_summary.csv", control_summary)
    write_json_atomic(args.metrics, symmetry_metrics(summary, config.threshold, control_summary))
    log.info("symmetry of %d models x %d placements -> %s", len(config.models), len(PLACEMENTS), out)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("symmetry", __doc__)
    parser.add_argument("--aligned", default="data/aligned", help="aligned-data folder (default: data/aligned)")
    parser.add_argument("--parsing-dir", default="data/parsing", help="parser outputs (default: data/parsing)")
    parser.add_argument("--weights", default="data/models", help="weights folder (default: data/models)")
    parser.add_argument("--leam-dir", default="data/leam",
                        help="leam stage outputs whose recorded cells are reused (default: data/leam)")
    parser.add_argument("--out", default="data/symmetry", help="output folder (default: data/symmetry)")
    parser.add_argument("--metrics", default="metrics/symmetry.json", help="metrics file (default: metrics/symmetry.json)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_stage("symmetry", main, build_parser()))
