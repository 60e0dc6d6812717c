"""Stage `variability`: how much do one person's explanations vary across that person's photos?

Two coefficients of variation (CV = std / mean, sample std, across a person's images; see
``leam.metrics.variability``):

- share CV: per face class and region, the CV of its share of the top-``threshold`` relevant pixels,
  from ``data/correlation/shares_per_image.csv``;
- map CV: per grid cell, the CV of the person's normalised maps pooled to ``variability.grid`` cells (same
  recipe as the similarity stage: ``similarity.negative_policy``, ``similarity.face_mask``), averaged over the
  person's face region (cells that are face in at least half of the person's images under the top-level
  ``face_region``: ``landmarks`` = the 68-landmark hull, ``parsing`` = the parser's face classes; ``all``
  = every cell; ``leam.face_region``). Both the plain mean of cell CVs
  (``map_cv``) and the mass-weighted one (``map_cv_weighted`` = sum std / sum mean) are written, for the
  full maps (threshold 1.0) and the top-``threshold`` maps.

Persons with fewer than ``variability.min_images`` images are skipped (counted in the log). Summaries
give the mean CV over persons with a 95% bootstrap CI, for everyone and per gender, and a Mann-Whitney
test of women vs men.

Reads  data/leam/<model>/{maps.npy,layers.json,meta.csv}, data/correlation/shares_per_image.csv,
       data/aligned/{index.csv,landmarks.npy}, data/parsing/labels.npy with face_region=parsing
Writes data/variability/per_identity.csv          map CV per model/layer/threshold/person
       data/variability/shares_per_identity.csv   share CV per model/layer/person/level/part
       data/variability/summary.csv               mean CV with CI per measure, all and per gender
       data/variability/tests.csv                 female vs male per measure
       metrics/variability.json

Examples:
  python -m stages.variability
  python -m stages.variability --shares /tmp/shares.csv --out /tmp/variability --metrics /tmp/v.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.errors import LeamError
from leam.face_region import read_face_region
from leam.io import (
    json_safe,
    read_csv_checked,
    read_leam_outputs,
    write_csv_atomic,
    write_json_atomic,
)
from leam.metrics.variability import metrics_document, model_map_variability, share_variability, summarise_variability

log = logging.getLogger("leam.variability")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    threshold, use_face_mask = config.threshold, config.similarity.face_mask
    grid, policy = config.variability.grid, config.similarity.negative_policy
    min_images, region = config.variability.min_images, config.face_region
    shares_path = Path(args.shares)
    if not shares_path.is_file():
        raise LeamError(f"missing {shares_path} (run the correlate stage)")
    shares = read_csv_checked(shares_path, ("model", "layer", "image_id", "share"), stage="correlate")

    maps_tables, share_tables, excluded, skipped = [], [], 0, 0
    for model in config.models:
        maps, layers, meta = read_leam_outputs(Path(args.leam_dir), model)
        face = (read_face_region(region, meta["image_id"], Path(args.aligned_dir), Path(args.parsing_dir),
                                 int(layers.get("frame_size", config.align.frame_size)), maps.shape[-1])
                if use_face_mask or region != "all" else None)
        result = model_map_variability(model, maps, layers, meta, grid, policy, threshold, min_images,
                                       face_mask=face if use_face_mask else None,
                                       region_mask=face if region != "all" else None)
        maps_tables.append(result.table)
        excluded, skipped = excluded + result.maps_excluded, skipped + result.persons_skipped
        model_shares = shares[shares["model"] == model]
        if model_shares.empty:
            raise LeamError(f"{shares_path} has no rows for model {model!r}")
        share_tables.append(share_variability(model_shares, threshold, min_images))
    per_identity = pd.concat(maps_tables, ignore_index=True)
    share_cv = pd.concat(share_tables, ignore_index=True)
    summary, tests = summarise_variability(per_identity, share_cv, threshold, config.variability.bootstrap,
                                           config.seed)

    out = Path(args.out)
    write_csv_atomic(out / "per_identity.csv", per_identity)
    write_csv_atomic(out / "shares_per_identity.csv", share_cv)
    write_csv_atomic(out / "summary.csv", summary)
    write_csv_atomic(out / "tests.csv", tests)
    write_json_atomic(args.metrics, json_safe(metrics_document(summary, tests, threshold, grid, policy, region)))
    overall = summary[(summary.layer == "overall") & (summary.measure == "map_cv") & (summary.gender == "all")
                      & np.isclose(summary.threshold, threshold)]
    log.info("variability: %d models, %d persons, %d maps excluded (no mass), %d persons with < %d images skipped; "
             "overall map CV at top %.3g = %s", len(config.models), per_identity.identity.nunique(), excluded,
             skipped, max(min_images, 2), threshold,
             ", ".join(f"{r.model} {r.mean:.3f}" for r in overall.itertuples()) or "n/a")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("variability", __doc__)
    parser.add_argument("--leam-dir", default="data/leam", help="LEAM outputs, one folder per model (default: data/leam)")
    parser.add_argument("--shares", default="data/correlation/shares_per_image.csv",
                        help="class shares per image (default: data/correlation/shares_per_image.csv)")
    parser.add_argument("--parsing-dir", default="data/parsing", help="parser labels (default: data/parsing)")
    parser.add_argument("--aligned-dir", default="data/aligned", help="aligned index (default: data/aligned)")
    parser.add_argument("--out", default="data/variability", help="output folder (default: data/variability)")
    parser.add_argument("--metrics", default="metrics/variability.json",
                        help="metrics file (default: metrics/variability.json)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("variability", main, build_parser()))
