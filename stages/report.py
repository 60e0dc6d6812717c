"""Stage `report`: render the Quarto website in reports/ to self-contained HTML pages in reports/_site/.

The pages (reports/*.qmd, listed in reports/_quarto.yml) only read what the earlier stages wrote:
metrics/*.json, the tidy CSVs under data/{correlation,similarity,variability,occlusion}/, the example PNGs,
and, for the gallery's overlays, data/aligned/frames.npy and data/leam/<model>/maps.npy. Nothing is
recomputed; a missing input shows a "not available: run dvc repro <stage>" note on its page.

Renderer (``report.renderer``):
  auto      quarto when `quarto` is on PATH, else the fallback (default)
  quarto    `quarto render reports` (error if quarto is not installed)
  fallback  leam.report.render: runs each page's Python cells with nbclient, one self-contained HTML per page

Params read by the pages: threshold, seed, models and every group they display (see the banner at the top
of each page); report.gallery_identities and report.gallery_images size the gallery.

Writes reports/_site/*.html (nothing else).

Examples:
  python -m stages.report
  python -m stages.report --renderer fallback     # override report.renderer for this run
  xdg-open reports/_site/index.html
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.errors import check_choice
from leam.report.render import render_site

log = logging.getLogger("leam.report")

RENDERERS = ("auto", "quarto", "fallback")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)  # the whole file is validated before any work
    renderer = args.renderer or config.report.renderer
    check_choice("report.renderer", renderer, RENDERERS)
    started = time.perf_counter()
    used, pages = render_site(Path(args.reports), renderer=renderer, timeout_s=int(args.timeout))
    size_mb = sum(page.stat().st_size for page in pages) / 1e6
    log.info("report: %d pages rendered with %s in %.1f s (%.1f MB) -> %s", len(pages), used,
             time.perf_counter() - started, size_mb, pages[0].parent if pages else args.reports)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("report", __doc__)
    parser.add_argument("--reports", default="reports", help="the Quarto project folder (default: reports)")
    parser.add_argument("--renderer", choices=RENDERERS, help="override report.renderer (auto|quarto|fallback)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one page's cells may run (default: 900)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("report", main, build_parser()))
