"""Stage `plots`: plot-ready CSVs for `dvc plots show` (one file per model and figure).

Reads  data/correlation/shares_summary.csv, data/similarity/summary.csv, data/occlusion/summary.csv,
       data/leam/<model>/layers.json
Writes plots/regions/<model>.csv     part, share         (overall map, top-`threshold` pixels)
       plots/similarity/<model>.csv  depth, layer, same, different   (BC at top-`threshold`)
       plots/occlusion/<model>.csv   threshold, leam, random_uniform, random_face, random_blob (source = target)

`dvc plots show` then draws them (see `make plots` for an offline HTML page).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from leam.cli import run_stage, stage_parser
from leam.errors import LeamError
from leam.io import load_params, param, write_csv_atomic
from leam.report import plotdata

log = logging.getLogger("leam.plots")


def build_parser():
    parser = stage_parser("plots", __doc__)
    parser.add_argument("--out", default="plots", help="output folder (default: plots)")
    return parser


def _read(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LeamError(f"missing input {path}: run `dvc repro` for the stage that writes it")
    return pd.read_csv(path)


def main(args) -> None:
    params = load_params(args.params)
    threshold = float(param(params, "threshold"))
    models = list(param(params, "models"))
    guide_map = (param(params, "occlusion.maps", ["overall"]) or ["overall"])[0]
    shares = _read("data/correlation/shares_summary.csv")
    similarity = _read("data/similarity/summary.csv")
    occlusion = _read("data/occlusion/summary.csv")
    out = Path(args.out)
    for model in models:
        layers = json.loads(Path(f"data/leam/{model}/layers.json").read_text())["layers"]
        write_csv_atomic(out / "regions" / f"{model}.csv", plotdata.region_shares(shares, model, threshold))
        write_csv_atomic(out / "similarity" / f"{model}.csv",
                         plotdata.similarity_by_layer(similarity, model, threshold, layers))
        write_csv_atomic(out / "occlusion" / f"{model}.csv",
                         plotdata.occlusion_by_threshold(occlusion, model, guide_map))
    log.info("plots: %d models x 3 figures -> %s", len(models), out)


if __name__ == "__main__":
    raise SystemExit(run_stage("plots", main, build_parser()))
