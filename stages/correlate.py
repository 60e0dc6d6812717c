"""Stage `correlate`: which face parts hold the most relevant LEAM pixels?

For every model in ``models``, every LEAM layer and the ``overall`` map, and every threshold in
``correlate.thresholds`` plus the top-level ``threshold`` (de-duplicated; 1.0 = whole map weighted by
activation), the share of the top-t map cells that fall in each parser class (see
``leam.metrics.correlation``: labels are reduced to the map grid as exact per-cell class fractions, ties
in the top-t ranking go to the earlier cell, k = round-half-up(t * cells)). ``not_labelled`` is a part
of its own, so the shares of an image sum to 1. Regions (eyes, brows, nose, mouth, skin, hair, ears,
background, other) are sums of their classes.

Reads  data/parsing/{labels.npy,index.csv,classes.json}, data/leam/<model>/{maps.npy,layers.json,meta.csv}
Writes data/correlation/shares_per_image.csv   model, layer, threshold, image_id, identity, gender, level, part, share, area
       data/correlation/shares_summary.csv     n, mean, std, 95% bootstrap CI per model/layer/threshold/part
       data/correlation/shares_by_gender.csv   the same per gender
       data/correlation/shares_by_identity.csv n, mean, std per identity
       data/correlation/enrichment.csv         mean share / mean area of the part (1 = no preference)
       data/correlation/exclusions.csv         images without parser labels, maps without mass
       metrics/correlation.json                per model/layer class shares at `threshold`; headline regions

Examples:
  python -m stages.correlate
  python -m stages.correlate --leam-dir /tmp/leam --parsing-dir /tmp/parsing --out /tmp/corr --metrics /tmp/corr.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.errors import LeamError
from leam.io import read_leam_outputs, read_parsing, write_csv_atomic, write_json_atomic
from leam.metrics.correlation import class_shares, label_fractions, metrics_document, summarise_shares, tidy_shares
from leam.topt import effective_thresholds

log = logging.getLogger("leam.correlate")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    models = config.models
    threshold = config.threshold
    thresholds = effective_thresholds(config.correlate.thresholds, threshold)
    n_boot, seed = config.correlate.bootstrap, config.seed
    labels, index, classes = read_parsing(args.parsing_dir)
    parsed_row = dict(zip(index.image_id[index.parsed.astype(bool)], index.row[index.parsed.astype(bool)]))

    tables, exclusions, counts = [], [], {}
    fractions_of: dict[tuple[bytes, int], np.ndarray] = {}  # models share photos and grid: compute once
    for model in tqdm(models, desc="correlate", disable=args.no_progress):
        maps, layer_info, meta = read_leam_outputs(Path(args.leam_dir), model)
        layers = list(layer_info["layers"])
        has_labels = meta.image_id.map(lambda image_id: image_id in parsed_row).to_numpy(dtype=bool)
        if not has_labels.any():
            raise LeamError(f"no image of model {model!r} has parser labels; do data/leam and data/parsing "
                            f"come from the same aligned set?")
        keep = np.flatnonzero(has_labels)
        rows = np.array([parsed_row[image_id] for image_id in meta.image_id[keep]], dtype=np.int64)
        key = (rows.tobytes(), int(maps.shape[2]))
        if key not in fractions_of:
            fractions_of[key] = label_fractions(np.asarray(labels[rows]), maps.shape[2])
        fractions = fractions_of[key]
        shares, valid = class_shares(np.asarray(maps[keep]), fractions, thresholds)
        table = tidy_shares(shares, fractions.mean(axis=1), meta.iloc[keep], model, layers, thresholds,
                            classes.get("available", []))
        tables.append(table)
        exclusions.append(pd.DataFrame({"model": model, "layer": "*", "image_id": meta.image_id[~has_labels],
                                        "reason": "no_parser_labels"}))
        bad_image, bad_layer = np.nonzero(~valid)
        exclusions.append(pd.DataFrame({"model": model, "layer": np.asarray(layers)[bad_layer],
                                        "image_id": meta.image_id.to_numpy()[keep][bad_image],
                                        "reason": "map_without_mass"}))
        counts[model] = {"images": int(len(keep)), "no_parser_labels": int((~has_labels).sum()),
                         "maps_without_mass": int((~valid).sum()), "layers": layers}

    per_image = pd.concat(tables, ignore_index=True)
    summaries = summarise_shares(per_image, n_boot=n_boot, seed=seed)
    out = Path(args.out)
    write_csv_atomic(out / "shares_per_image.csv", per_image.assign(share=per_image.share.round(6),
                                                                    area=per_image.area.round(6)))
    for name, frame in summaries.items():
        write_csv_atomic(out / f"{name}.csv", frame.round(6))
    write_csv_atomic(out / "exclusions.csv", pd.concat(exclusions, ignore_index=True))
    document = metrics_document(summaries["shares_summary"], threshold, counts)
    document["parser"] = {"backend": classes.get("backend"), "available": classes.get("available", [])}
    document["thresholds"] = thresholds
    write_json_atomic(args.metrics, document)
    for model, regions in document["headline"].items():
        log.info("correlate %s (overall, top %.3g): %s; %d images", model, threshold,
                 ", ".join(f"{k} {v:.3f}" for k, v in regions.items()), counts[model]["images"])


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("correlate", __doc__)
    parser.add_argument("--leam-dir", default="data/leam", help="LEAM outputs, one folder per model (default: data/leam)")
    parser.add_argument("--parsing-dir", default="data/parsing", help="parser outputs (default: data/parsing)")
    parser.add_argument("--out", default="data/correlation", help="output folder (default: data/correlation)")
    parser.add_argument("--metrics", default="metrics/correlation.json", help="metrics file (default: metrics/correlation.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("correlate", main, build_parser()))
