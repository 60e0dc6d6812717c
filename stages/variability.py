"""Stage `variability`: how much do one person's explanations vary across that person's photos?

Two coefficients of variation (CV = std / mean, sample std, across a person's images; see
``leam.metrics.variability``):

- share CV: per face class and region, the CV of its share of the top-``threshold`` relevant pixels,
  from ``data/correlation/shares_per_image.csv``;
- map CV: per grid cell, the CV of the person's pooled, normalised maps (same recipe as the similarity
  stage: ``similarity.grid``, ``similarity.negative_policy``, ``similarity.face_mask``), averaged over the
  person's face region (``variability.face_region``: ``parsing`` = cells that are face in at least half
  of the person's images, from the parser labels; ``all`` = every cell). Both the plain mean of cell CVs
  (``map_cv``) and the mass-weighted one (``map_cv_weighted`` = sum std / sum mean) are written, for the
  full maps (threshold 1.0) and the top-``threshold`` maps.

Persons with fewer than ``variability.min_images`` images are skipped (counted in the log). Summaries
give the mean CV over persons with a 95% bootstrap CI, for everyone and per gender, and a Mann-Whitney
test of women vs men.

Reads  data/leam/<model>/{maps.npy,layers.json,meta.csv}, data/correlation/shares_per_image.csv,
       data/parsing/labels.npy + data/aligned/index.csv (face_region=parsing or similarity.face_mask)
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
from leam.config import Config, load_config
from leam.errors import LeamError
from leam.io import (
    json_safe,
    read_csv_checked,
    read_face_labels,
    read_leam_outputs,
    write_csv_atomic,
    write_json_atomic,
)
from leam.metrics.distributions import face_class_ids, face_mask_from_labels, maps_to_distributions, pool_area
from leam.metrics.variability import gender_tests, map_variability, share_variability, summarize_by_gender
from leam.topt import effective_thresholds

log = logging.getLogger("leam.variability")


def model_map_variability(maps: np.ndarray, layers: dict, meta: pd.DataFrame, config: Config,
                          face_mask: np.ndarray | None, region_mask: np.ndarray | None) -> tuple[pd.DataFrame, int]:
    """Map CV per layer, threshold (1.0 and top-level) and person; also the number of excluded maps."""
    grid = config.similarity.grid
    policy = config.similarity.negative_policy
    min_images = config.variability.min_images
    face_fraction = None
    if region_mask is not None:
        face_fraction = pool_area(region_mask.astype(np.float32), grid).reshape(len(meta), -1)
    tables, excluded = [], 0
    for layer_index, layer in enumerate(layers["layers"]):
        layer_maps = np.asarray(maps[:, layer_index], dtype=np.float32)
        for fraction in effective_thresholds([1.0], config.threshold):
            dist = maps_to_distributions(layer_maps, grid, policy, fraction, face_mask)
            excluded += dist.n_excluded
            keep = dist.valid
            table = map_variability(dist.probs[keep], meta["identity"].to_numpy()[keep],
                                    None if face_fraction is None else face_fraction[keep], min_images)
            tables.append(table.assign(layer=layer, threshold=fraction))
    out = pd.concat(tables, ignore_index=True)
    gender = meta.drop_duplicates("identity").set_index("identity")["gender"]
    out["gender"] = out["identity"].map(gender).fillna("unknown")
    return out, excluded


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    threshold = config.threshold
    seed = config.seed
    n_boot = config.variability.bootstrap
    min_images = config.variability.min_images
    region = config.variability.face_region
    use_face_mask = config.similarity.face_mask
    shares_path = Path(args.shares)
    if not shares_path.is_file():
        raise LeamError(f"missing {shares_path} (run the correlate stage)")
    shares = read_csv_checked(shares_path, ("model", "layer", "image_id", "share"), stage="correlate")

    maps_tables, share_tables, excluded_total, skipped = [], [], 0, 0
    models = config.models
    for model in models:
        maps, layers, meta = read_leam_outputs(Path(args.leam_dir), model)
        face = None
        if use_face_mask or region == "parsing":
            labels = read_face_labels(Path(args.parsing_dir), Path(args.aligned_dir), meta["image_id"])
            face = face_mask_from_labels(labels, face_class_ids(), maps.shape[-1])
        table, excluded = model_map_variability(maps, layers, meta, config, face if use_face_mask else None,
                                                face if region == "parsing" else None)
        maps_tables.append(table.assign(model=model))
        excluded_total += excluded
        counts = meta.groupby("identity").size()
        skipped += int((counts < max(min_images, 2)).sum())
        model_shares = shares[shares["model"] == model]
        if model_shares.empty:
            raise LeamError(f"{shares_path} has no rows for model {model!r}")
        share_tables.append(share_variability(model_shares, threshold, min_images))
    per_identity = pd.concat(maps_tables, ignore_index=True)
    per_identity = per_identity[["model", "layer", "threshold", "identity", "gender", "n_images", "n_cells",
                                 "map_cv", "map_cv_weighted"]]
    share_cv = pd.concat(share_tables, ignore_index=True)

    long_maps = per_identity.melt(id_vars=["model", "layer", "threshold", "identity", "gender"],
                                  value_vars=["map_cv", "map_cv_weighted"], var_name="measure", value_name="cv")
    long_maps["level"], long_maps["part"] = "map", ""
    long_shares = share_cv.assign(measure="share_cv", threshold=threshold)
    long_all = pd.concat([long_maps, long_shares[long_maps.columns]], ignore_index=True)
    keys = ["model", "layer", "threshold", "measure", "level", "part"]
    summary = summarize_by_gender(long_all, keys, "cv", n_boot=n_boot, seed=seed)
    tests = gender_tests(long_all, keys, "cv")

    out = Path(args.out)
    write_csv_atomic(out / "per_identity.csv", per_identity)
    write_csv_atomic(out / "shares_per_identity.csv", share_cv)
    write_csv_atomic(out / "summary.csv", summary)
    write_csv_atomic(out / "tests.csv", tests)
    write_json_atomic(args.metrics, json_safe(metrics_document(summary, tests, config, region)))
    overall = summary[(summary.layer == "overall") & (summary.measure == "map_cv") & (summary.gender == "all")
                      & np.isclose(summary.threshold, threshold)]
    log.info("variability: %d models, %d persons, %d maps excluded (no mass), %d persons with < %d images skipped; "
             "overall map CV at top %.3g = %s", len(models), per_identity.identity.nunique(), excluded_total,
             skipped, max(min_images, 2), threshold,
             ", ".join(f"{r.model} {r.mean:.3f}" for r in overall.itertuples()) or "n/a")


def metrics_document(summary: pd.DataFrame, tests: pd.DataFrame, config: Config, region: str) -> dict:
    """Small JSON: per model and layer, mean map CV (top-t and full, all/female/male) and mean share CV per part."""
    threshold = config.threshold
    doc: dict = {"threshold": threshold, "grid": config.similarity.grid,
                 "negative_policy": config.similarity.negative_policy, "face_region": region,
                 "cv": "sample std (ddof=1) / mean across a person's images", "models": {}}
    for (model, layer), rows in summary.groupby(["model", "layer"], sort=False):
        entry: dict = {}
        for measure, fraction, name in (("map_cv", threshold, "map_cv_top"), ("map_cv", 1.0, "map_cv_full"),
                                        ("map_cv_weighted", threshold, "map_cv_weighted_top")):
            part = rows[(rows.measure == measure) & np.isclose(rows.threshold, fraction)].set_index("gender")
            entry[name] = {g: {"mean": part.loc[g, "mean"], "ci": [part.loc[g, "ci_low"], part.loc[g, "ci_high"]],
                               "n": int(part.loc[g, "n"])} for g in ("all", "female", "male") if g in part.index}
            test = tests[(tests.model == model) & (tests.layer == layer) & (tests.measure == measure)
                         & np.isclose(tests.threshold, fraction)]
            if not test.empty:
                entry[name]["female_vs_male_p"] = test.iloc[0].p_value
        shares = rows[(rows.measure == "share_cv") & (rows.gender == "all")]
        for level, part in shares.groupby("level"):
            entry[f"share_cv_{level}"] = {r["part"]: r["mean"] for _, r in part.iterrows() if np.isfinite(r["mean"])}
        doc["models"].setdefault(model, {})[layer] = entry
    return doc


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
