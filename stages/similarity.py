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
import time
from pathlib import Path

import numpy as np
import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import Config, load_config
from leam.errors import LeamError
from leam.io import load_npy, read_csv_checked, read_leam_outputs, write_csv_atomic, write_json_atomic
from leam.metrics.distributions import (GROUND_METRIC, cell_size, face_class_ids, face_mask_from_labels,
                                        ground_cost, maps_to_distributions)
from leam.metrics.similarity import (DIFFERENT, PAPER_BC_RANGES, SAME, bhattacharyya_matrix, build_pairs,
                                     emd_pairs, summary_tables)
from leam.topt import effective_thresholds

log = logging.getLogger("leam.similarity")


# ------------------------------------------------------------------------ inputs (shared with variability)
def load_face_masks(parsing_dir: Path, aligned_dir: Path, image_ids, map_size: int) -> np.ndarray:
    """Face region (N, G, G) bool in map pixels for ``image_ids``, from parser labels aligned with the index."""
    labels_path, index_path = Path(parsing_dir) / "labels.npy", Path(aligned_dir) / "index.csv"
    for path in (labels_path, index_path):
        if not path.is_file():
            raise LeamError(f"face mask needs {path} (run the parse and align stages, or set similarity.face_mask=false)")
    labels = load_npy(labels_path, mmap_mode="r", stage="parse")
    index = read_csv_checked(index_path, ("image_id",), stage="align")
    if labels.shape[0] != len(index):
        raise LeamError(f"{labels_path} has {labels.shape[0]} rows but {index_path} lists {len(index)} images")
    row_of = dict(zip(index["image_id"], index["row"] if "row" in index else range(len(index))))
    unknown = [i for i in image_ids if i not in row_of]
    if unknown:
        raise LeamError(f"{len(unknown)} map image(s) missing from {index_path}, e.g. {unknown[0]!r}")
    rows = np.array([row_of[i] for i in image_ids], dtype=np.int64)
    return face_mask_from_labels(np.asarray(labels[rows]), face_class_ids(), map_size)


def variant_thresholds(config: Config) -> list[float]:
    """Sorted top-t fractions: ``similarity.thresholds`` plus the top-level ``threshold``."""
    return effective_thresholds(config.similarity.thresholds, config.threshold, "similarity.thresholds")


# ------------------------------------------------------------------------------------------ science
def score_model(maps: np.ndarray, layers: dict, meta: pd.DataFrame, config: Config, face_mask: np.ndarray | None,
                progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Pairs, long scores, exclusions and timings (s) of one model."""
    cfg = config.similarity
    grid = cfg.grid
    bc_grid = cfg.bc_grid or maps.shape[-1]
    policy = cfg.negative_policy
    threshold = config.threshold
    frame_size = int(layers.get("frame_size", config.align.frame_size))
    names = list(layers["layers"])
    emd_layers = list(cfg.emd_layers)
    unknown = [name for name in emd_layers if name not in names]
    if unknown:
        raise LeamError(f"similarity.emd_layers {unknown} not among this model's layers: {', '.join(names)}")
    emd_thresholds = {threshold} | set(cfg.emd_thresholds)
    workers = cfg.workers
    max_iter = cfg.emd_max_iter
    cost = ground_cost(grid, frame_size)  # once per grid

    pairs = build_pairs(meta, cfg.different_per_same, config.seed)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    scores, exclusions, timings = [], [], {"maps_s": 0.0, "bc_s": 0.0, "emd_s": 0.0, "emd_pairs": 0}
    for layer_index, layer in enumerate(names):
        layer_maps = np.asarray(maps[:, layer_index], dtype=np.float32)
        for fraction in variant_thresholds(config):
            start = time.perf_counter()
            dist_bc = maps_to_distributions(layer_maps, bc_grid, policy, fraction, face_mask)
            timings["maps_s"] += time.perf_counter() - start
            keep = dist_bc.valid[a] & dist_bc.valid[b]
            exclusions.append({"layer": layer, "threshold": fraction, "maps_excluded": dist_bc.n_excluded,
                               "pairs_dropped": int((~keep).sum())})
            start = time.perf_counter()
            bc = bhattacharyya_matrix(dist_bc.probs, dtype=np.float32)[a[keep], b[keep]].astype(np.float64)
            timings["bc_s"] += time.perf_counter() - start
            scores.append(pd.DataFrame({"layer": layer, "threshold": fraction, "metric": "bc",
                                        "pair_id": pairs["pair_id"].to_numpy()[keep], "value": bc}))
            if layer in emd_layers and any(np.isclose(fraction, t) for t in emd_thresholds):
                start = time.perf_counter()
                dist = (dist_bc if bc_grid == grid
                        else maps_to_distributions(layer_maps, grid, policy, fraction, face_mask))
                keep = dist.valid[a] & dist.valid[b]
                emd = emd_pairs(dist.probs, np.stack([a[keep], b[keep]], axis=1), cost, workers=workers,
                                max_iter=max_iter, progress=progress)
                timings["emd_s"] += time.perf_counter() - start
                timings["emd_pairs"] += int(keep.sum())
                scores.append(pd.DataFrame({"layer": layer, "threshold": fraction, "metric": "emd",
                                            "pair_id": pairs["pair_id"].to_numpy()[keep], "value": emd}))
    return pairs, pd.concat(scores, ignore_index=True), pd.DataFrame(exclusions), timings


def headline(summary: pd.DataFrame, tests: pd.DataFrame, model: str, threshold: float) -> dict:
    """metrics/similarity.json entries of one model: per layer, BC at ``threshold`` and full, and EMD."""
    out: dict = {}
    summary = summary[summary.model == model]
    tests = tests[(tests.model == model) & (tests.gender == "all")]
    for layer in summary.layer.unique():
        entry = {}
        for metric in ("bc", "emd"):
            for name, fraction in ((f"{metric}_top", threshold), (f"{metric}_full", 1.0)):
                rows = summary[(summary.layer == layer) & (summary.metric == metric)
                               & np.isclose(summary.threshold, fraction)].set_index("pair_type")
                test = tests[(tests.layer == layer) & (tests.metric == metric) & np.isclose(tests.threshold, fraction)]
                if rows.empty or test.empty:
                    continue
                test = test.iloc[0]
                entry[name] = {
                    "same_mean": rows.loc[SAME, "mean"], "same_ci": [rows.loc[SAME, "ci_low"], rows.loc[SAME, "ci_high"]],
                    "different_mean": rows.loc[DIFFERENT, "mean"],
                    "different_ci": [rows.loc[DIFFERENT, "ci_low"], rows.loc[DIFFERENT, "ci_high"]],
                    "p_value": test.p_value, "rank_biserial": test.rank_biserial, "cohens_d": test.cohens_d,
                    "same_more_similar": bool(test.same_more_similar)}
                if metric == "bc":  # where our means fall relative to the paper's ranges across layers
                    entry[name].update({f"{kind}_in_paper_range": bool(low <= entry[name][f"{kind}_mean"] <= high)
                                        for kind, (low, high) in PAPER_BC_RANGES.items()})
        out[layer] = entry
    return out


def json_safe(value):
    """Replace NaN/inf (undefined statistics) by None so metrics files stay strict JSON for DVC."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


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
        face_mask = (load_face_masks(Path(args.parsing_dir), Path(args.aligned_dir), meta["image_id"], maps.shape[-1])
                     if use_face_mask else None)
        pairs, scores, exclusions, timings = score_model(maps, layers, meta, config, face_mask,
                                                         progress=not args.no_progress)
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
