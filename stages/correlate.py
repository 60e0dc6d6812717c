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
                                               (at the top-level threshold; correlate.per_image_all: every one)
       data/correlation/shares_summary.csv     n, mean, std, 95% bootstrap CI per model/layer/threshold/part
       data/correlation/shares_by_gender.csv   the same per gender
       data/correlation/shares_by_identity.csv n, mean, std per identity
       data/correlation/enrichment.csv         mean share / mean area of the part (1 = no preference)
       data/correlation/exclusions.csv         images without parser labels, maps without mass
       data/correlation/parser_comparison.csv  at `threshold`, per model/layer/level/part: mean share with the
                                               parser and with the parse stage's reference parser (mesh: the
                                               landmark parser) over the faces both labelled, their difference
                                               and its paired 95% bootstrap CI (header only without a reference)
       metrics/correlation.json                per model/layer class shares at `threshold`; headline regions;
                                               parser_comparison (headline regions under both parsers, or why
                                               it was skipped)

One network at a time: its summaries and per-image rows are computed and written before the next is read
(``leam.metrics.correlation.iter_correlations``), so memory does not grow with the number of networks.

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
from leam.io import (
    read_leam_outputs,
    read_parsing,
    read_parsing_reference,
    write_csv_atomic,
    write_csv_parts_atomic,
    write_json_atomic,
)
from leam.metrics.correlation import (
    COMPARISON_COLUMNS,
    ParserReference,
    compare_parsers,
    comparison_document,
    iter_correlations,
    metrics_document,
    summarise_shares,
)
from leam.parsing.classes import CLASSES
from leam.topt import effective_thresholds

log = logging.getLogger("leam.correlate")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    threshold = config.threshold
    thresholds = effective_thresholds(config.correlate.thresholds, threshold)
    labels, index, classes = read_parsing(args.parsing_dir)
    found = read_parsing_reference(args.parsing_dir, index, classes)
    reference = None
    if found is not None:
        name, reference_labels, reference_parsed, reference_available = found
        either = [c for c in CLASSES if c in {*classes.get("available", []), *reference_available}]
        reference = ParserReference(name, reference_labels, reference_parsed, threshold, either)
    outputs = ((model, *read_leam_outputs(Path(args.leam_dir), model))
               for model in tqdm(config.models, desc="correlate", disable=args.no_progress))
    out = Path(args.out)
    parts: dict[str, list[pd.DataFrame]] = {"exclusions": [], "comparison": []}
    counts: dict = {}

    def per_image_rows():
        """Each model's per-image rows as they are written, its summaries and comparison kept (one model in memory)."""
        for part in iter_correlations(outputs, labels, index, thresholds, classes.get("available", []), reference):
            for name, frame in summarise_shares(part.per_image, n_boot=config.correlate.bootstrap,
                                                seed=config.seed).items():
                parts.setdefault(name, []).append(frame)
            parts["exclusions"].append(part.exclusions)
            counts.update(part.counts)
            if reference is not None:
                parts["comparison"].append(compare_parsers(part.comparison, n_boot=config.correlate.bootstrap,
                                                           seed=config.seed))
            per_image = part.per_image
            if not config.correlate.per_image_all:   # 5x smaller: the summaries keep every threshold
                per_image = per_image[np.isclose(per_image.threshold.to_numpy(dtype=np.float64), threshold)]
            yield per_image.assign(share=per_image.share.round(6), area=per_image.area.round(6))

    write_csv_parts_atomic(out / "shares_per_image.csv", per_image_rows())
    # summarise_shares sorts its groups, models first: the per-model tables in that order are the tables of all
    summaries = {name: pd.concat(parts[name], ignore_index=True).sort_values("model", kind="stable", ignore_index=True)
                 for name in ("shares_summary", "shares_by_gender", "shares_by_identity", "enrichment")}
    for name, frame in summaries.items():
        write_csv_atomic(out / f"{name}.csv", frame.round(6))
    write_csv_atomic(out / "exclusions.csv", pd.concat(parts["exclusions"], ignore_index=True))
    document = metrics_document(summaries["shares_summary"], threshold, counts)
    document["parser"] = {"backend": classes.get("backend"), "available": classes.get("available", [])}
    document["thresholds"] = thresholds
    if reference is None:
        comparison = pd.DataFrame(columns=COMPARISON_COLUMNS)
        document["parser_comparison"] = {"skipped": f"parsing.backend {classes.get('backend')} ran no reference "
                                                    "parser (only mesh runs the landmark parser beside it)"}
    else:
        comparison = pd.concat(parts["comparison"], ignore_index=True)
        document["parser_comparison"] = comparison_document(comparison, classes.get("backend"), reference.backend,
                                                            counts)
    write_csv_atomic(out / "parser_comparison.csv", comparison.round(6))
    write_json_atomic(args.metrics, document)
    for model, regions in document["headline"].items():
        log.info("correlate %s (overall, top %.3g): %s; %d images", model, threshold,
                 ", ".join(f"{k} {v:.3f}" for k, v in regions.items()), counts[model]["images"])
    if reference is not None:
        for model, regions in document["parser_comparison"]["headline"].items():
            log.info("correlate %s parser comparison (overall, top %.3g), %s - %s: %s", model, threshold,
                     classes.get("backend"), reference.backend,
                     ", ".join(f"{k} {v['difference']:+.3f}" for k, v in regions.items()))


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
