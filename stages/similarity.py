"""Stage `similarity`: are LEAM maps of the same person more alike than maps of different people?

For every model in ``models``, every LEAM layer (and ``overall``) and every top-t variant
(``similarity.thresholds`` plus the top-level ``threshold``; 1.0 = full map), each map becomes a
distribution over grid cells: ``similarity.bc_grid`` cells a side for BC (0 = the stored map grid, no
pooling) and ``similarity.grid`` for EMD (area pooling after top-t selection at full resolution, ``similarity.negative_policy``, optional ``similarity.face_mask``; see
``leam.metrics.distributions``). Pairs: every same-identity pair and, per identity, a seeded sample of
``similarity.different_per_same`` different-identity pairs per same pair.

- Bhattacharyya coefficient (BC, 1 = identical, 0 = disjoint) for every layer and variant;
- exact Earth Mover's Distance (POT network simplex; analysis-frame pixels) for ``similarity.emd_layers``
  at the top-level threshold plus ``similarity.emd_thresholds`` (EMD costs milliseconds per pair).

Reads  data/leam/<model>/{maps.npy,layers.json,meta.csv}; with face_mask also data/parsing/labels.npy and
       data/aligned/index.csv.
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
import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.io import json_safe, read_face_labels, read_leam_outputs, write_csv_atomic, write_json_atomic
from leam.metrics.distributions import GROUND_METRIC, cell_size, face_class_ids, face_mask_from_labels
from leam.metrics.similarity import DIFFERENT, PAPER_BC_RANGES, SAME, headline, score_model, summary_tables

log = logging.getLogger("leam.similarity")


# ---------------------------------------------------------------------------------------------- stage
def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    cfg = config.similarity
    models = config.models
    grid = cfg.grid
    threshold = config.threshold
    use_face_mask = cfg.face_mask
    n_boot, seed = cfg.bootstrap, config.seed
    out = Path(args.out)
    all_pairs, all_scores, all_exclusions, metrics_models = [], [], [], {}
    frame_size = None
    for model in models:
        maps, layers, meta = read_leam_outputs(Path(args.leam_dir), model)
        frame_size = int(layers.get("frame_size", config.align.frame_size))
        face_mask = None
        if use_face_mask:
            labels = read_face_labels(Path(args.parsing_dir), Path(args.aligned_dir), meta["image_id"])
            face_mask = face_mask_from_labels(labels, face_class_ids(), maps.shape[-1])
        pairs, scores, exclusions, timings = score_model(maps, layers, meta, cfg, threshold, seed, frame_size,
                                                         face_mask, progress=not args.no_progress)
        log.info("%s: maps -> distributions %.1f s, BC %.2f s, EMD %.1f s for %d pairs (%.0f pairs/s)", model,
                 timings["maps_s"], timings["bc_s"], timings["emd_s"], timings["emd_pairs"],
                 timings["emd_pairs"] / max(timings["emd_s"], 1e-9))
        all_pairs.append(pairs.drop(columns=["a", "b"]).assign(model=model))
        all_scores.append(scores.assign(model=model))
        all_exclusions.append(exclusions.assign(model=model))
        metrics_models[model] = {"n_maps": int(len(meta)), "n_same_pairs": int((pairs.pair_type == SAME).sum()),
                                 "n_different_pairs": int((pairs.pair_type == DIFFERENT).sum())}
    pairs = pd.concat(all_pairs, ignore_index=True)
    scores = pd.concat(all_scores, ignore_index=True)
    labelled = scores.merge(pairs[["model", "pair_id", "pair_type", "gender_group"]], on=["model", "pair_id"])
    summary, by_gender, tests = summary_tables(labelled, n_boot=n_boot, seed=seed)
    for model in models:
        metrics_models[model]["layers"] = headline(summary, tests, model, threshold)

    front = ["model", "pair_id"]
    write_csv_atomic(out / "pairs.csv", pairs[front + [c for c in pairs.columns if c not in front]])
    scores = scores[["model", "layer", "threshold", "metric", "pair_id", "value"]]
    write_csv_atomic(out / "scores.csv", scores.assign(value=scores.value.round(6)))
    write_csv_atomic(out / "summary.csv", summary)
    write_csv_atomic(out / "by_gender.csv", by_gender)
    write_csv_atomic(out / "tests.csv", tests)
    exclusions = pd.concat(all_exclusions, ignore_index=True)
    write_csv_atomic(out / "exclusions.csv", exclusions[["model", "layer", "threshold", "maps_excluded", "pairs_dropped"]])
    write_json_atomic(args.metrics, json_safe({
        "grid": grid, "cell_size_px": cell_size(frame_size, grid), "frame_size": frame_size,
        "bc_grid": cfg.bc_grid or "stored map grid (leam.store_size)",
        "ground_metric": GROUND_METRIC, "negative_policy": cfg.negative_policy,
        "face_mask": use_face_mask, "threshold": threshold,
        "pairing": f"all same-identity pairs; {cfg.different_per_same} seeded "
                   f"different-identity pairs per same pair, per identity",
        "emd_layers": list(cfg.emd_layers),
        "emd_thresholds": sorted({threshold} | set(cfg.emd_thresholds)),
        "paper_bc_ranges": {k: list(v) for k, v in PAPER_BC_RANGES.items()},
        "models": metrics_models}))
    top = tests[(tests.gender == "all") & (tests.metric == "bc") & np.isclose(tests.threshold, threshold)]
    log.info("similarity: %d models, %d pairs, %d scores; same > different BC (CIs apart) in %d/%d layers at top %.3g",
             len(models), len(pairs), len(scores), int(top.same_more_similar.sum()), len(top), threshold)


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
