"""Stage `plots`: plot-ready CSVs for `dvc plots show` (one file per model and figure).

Reads  data/correlation/shares_summary.csv, data/similarity/summary.csv, data/occlusion/summary.csv,
       data/leam/<model>/layers.json
Writes plots/regions/<model>.csv     part, share         (overall map, top-`threshold` pixels)
       plots/similarity/<model>.csv  depth, layer, same, different   (BC at top-`threshold`)
       plots/occlusion/<model>.csv   threshold, leam, random_uniform, random_face, random_blob (source = target)

`dvc plots show` then draws them (see `make plots` for an offline HTML page).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.io import read_csv_checked, read_json_checked, write_csv_atomic
from leam.report import plotdata

log = logging.getLogger("leam.plots")


def build_parser():
    parser = stage_parser("plots", __doc__)
    parser.add_argument("--out", default="plots", help="output folder (default: plots)")
    return parser


def _read(path: str, stage: str) -> pd.DataFrame:
    """A summary table written by ``stage``; missing, empty or unparsable is one error line."""
    return read_csv_checked(path, stage=stage)


def main(args) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    threshold = config.threshold
    models = config.models
    guide_map = config.occlusion.maps[0]  # the transfer map (the schema keeps occlusion.maps non-empty)
    shares = _read("data/correlation/shares_summary.csv", "correlate")
    similarity = _read("data/similarity/summary.csv", "similarity")
    occlusion = _read("data/occlusion/summary.csv", "occlusion")
    out = Path(args.out)
    for model in models:
        layers = read_json_checked(f"data/leam/{model}/layers.json", ("layers",), stage=f"leam@{model}")["layers"]
        write_csv_atomic(out / "regions" / f"{model}.csv", plotdata.region_shares(shares, model, threshold))
        write_csv_atomic(out / "similarity" / f"{model}.csv",
                         plotdata.similarity_by_layer(similarity, model, threshold, layers))
        write_csv_atomic(out / "occlusion" / f"{model}.csv",
                         plotdata.occlusion_by_threshold(occlusion, model, guide_map))
    log.info("plots: %d models x 3 figures -> %s", len(models), out)


if __name__ == "__main__":
    raise SystemExit(run_stage("plots", main, build_parser()))
