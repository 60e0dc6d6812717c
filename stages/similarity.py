"""Stage `similarity`: are LEAM maps of the same person more alike than maps of different people?

For every model in ``models``, every LEAM layer (and ``overall``) and every top-t variant
(``similarity.thresholds`` plus the top-level ``threshold``; 1.0 = full map), each map becomes a
distribution over grid cells (top-t selection at full resolution, ``similarity.negative_policy``, optional
``similarity.face_mask``; see ``leam.metrics.distributions``): ``similarity.bc_grid`` cells a side for BC (0 =
the stored map grid, no pooling); for EMD the stored map grid for top-t maps and ``similarity.emd_grid``
(area pooling) for full maps (t = 1). Pairs: every same-identity pair and, per identity, a seeded sample of
``similarity.different_per_same`` different-identity pairs per same pair.

- Bhattacharyya coefficient (BC, 1 = identical, 0 = disjoint) for every layer and variant;
- exact Earth Mover's Distance (POT network simplex; analysis-frame pixels) for ``similarity.emd_layers``
  at the top-level threshold plus ``similarity.emd_thresholds``: top-t maps solved on their support at the
  stored grid (a few milliseconds per pair), full maps on ``similarity.emd_grid`` cells.

Reads  data/leam/<model>/{maps.npy,layers.json,meta.csv}; with face_mask also the face region
       (top-level ``face_region``: data/aligned/{index.csv,landmarks.npy}, or data/parsing/labels.npy).
Writes data/similarity/pairs.csv        one row per pair (type, images, identities, gender group)
       data/similarity/scores.csv       model, layer, threshold, metric, pair_id, value (tidy, long)
       data/similarity/summary.csv      mean, std, 95% bootstrap CI per layer/threshold/metric/pair type
       data/similarity/by_gender.csv    the same per gender group (female, male, female-female, ...)
       data/similarity/tests.csv        same vs different: Mann-Whitney p, effect sizes, CI separation
       data/similarity/exclusions.csv   maps without mass (excluded) and pairs dropped with them
       metrics/similarity.json          headline per model/layer, beside the paper's BC ranges

Examples:
  python -m stages.similarity
  python -m stages.similarity --leam-dir /tmp/leam --out /tmp/similarity --metrics /tmp/similarity.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.face_region import read_face_region
from leam.io import json_safe, read_leam_outputs, write_csv_atomic, write_json_atomic
from leam.metrics.similarity import metrics_document, model_similarity, similarity_tables

log = logging.getLogger("leam.similarity")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    cfg, threshold, seed = config.similarity, config.threshold, config.seed
    results, frame_size, store_size = [], None, None
    for model in config.models:
        maps, layers, meta = read_leam_outputs(Path(args.leam_dir), model)
        frame_size = int(layers.get("frame_size", config.align.frame_size))
        store_size = int(maps.shape[-1])
        face_mask = (read_face_region(config.face_region, meta["image_id"], Path(args.aligned_dir),
                                      Path(args.parsing_dir), frame_size, maps.shape[-1]) if cfg.face_mask else None)
        results.append(model_similarity(model, maps, layers, meta, cfg, threshold, seed, frame_size, face_mask,
                                        progress=not args.no_progress))
    tables = similarity_tables(results, n_boot=cfg.bootstrap, seed=seed)
    out = Path(args.out)
    for name, table in tables.items():
        write_csv_atomic(out / f"{name}.csv", table)
    tests = tables["tests"]
    write_json_atomic(args.metrics, json_safe(metrics_document(results, tables["summary"], tests, cfg, threshold,
                                                               frame_size, store_size)))
    top = tests[(tests.gender == "all") & (tests.metric == "bc") & np.isclose(tests.threshold, threshold)]
    log.info("similarity: %d models, %d pairs, %d scores; same > different BC (CIs apart) in %d/%d layers at top %.3g",
             len(config.models), len(tables["pairs"]), len(tables["scores"]), int(top.same_more_similar.sum()),
             len(top), threshold)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("similarity", __doc__)
    parser.add_argument("--leam-dir", default="data/leam", help="LEAM outputs, one folder per model (default: data/leam)")
    parser.add_argument("--parsing-dir", default="data/parsing", help="parser labels (default: data/parsing)")
    parser.add_argument("--aligned-dir", default="data/aligned", help="aligned index (default: data/aligned)")
    parser.add_argument("--out", default="data/similarity", help="output folder (default: data/similarity)")
    parser.add_argument("--metrics", default="metrics/similarity.json", help="metrics file (default: metrics/similarity.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("similarity", main, build_parser()))
