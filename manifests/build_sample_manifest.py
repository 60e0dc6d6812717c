"""Build ``manifests/sample.csv`` from the face mirror's ``manifest.csv``.

    python manifests/build_sample_manifest.py [--mirror /work/shared/faces] [--out manifests/sample.csv]

Keeps identity, gender, file and sha256 as the mirror has them, adds the source tag and licence note of each
repository (``leam.data.manifest.SAMPLE_SOURCES``, explained in manifests/SOURCES.md) and the public raw-file
URL ``https://raw.githubusercontent.com/<source_repo>/<source_commit>/<source_path>`` that the ``faces`` stage
downloads when no mirror is available. Rows are sorted by identity, then file. Run it again whenever the
mirror's manifest changes and commit the result.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leam.cli import run_stage, stage_parser  # noqa: E402
from leam.data.manifest import SAMPLE_COLUMNS, SAMPLE_SOURCES, raw_github_url, read_sample_manifest  # noqa: E402
from leam.errors import LeamError  # noqa: E402
from leam.io import write_csv_atomic  # noqa: E402

log = logging.getLogger("leam.build_sample_manifest")
MIRROR_COLUMNS = ("identity", "gender", "file", "source_repo", "source_commit", "source_path", "sha256")


def build(mirror_manifest: pd.DataFrame) -> pd.DataFrame:
    """Mirror manifest rows -> sample manifest rows (``SAMPLE_COLUMNS``), sorted by identity and file."""
    missing = [c for c in MIRROR_COLUMNS if c not in mirror_manifest.columns]
    if missing:
        raise LeamError(f"mirror manifest lacks column(s) {', '.join(missing)}")
    unknown = sorted(set(mirror_manifest.source_repo) - set(SAMPLE_SOURCES))
    if unknown:
        raise LeamError(f"no source tag/licence known for {', '.join(unknown)}: add them to SAMPLE_SOURCES")
    rows = mirror_manifest.copy()
    rows["source"] = [SAMPLE_SOURCES[r][0] for r in rows.source_repo]
    rows["licence"] = [SAMPLE_SOURCES[r][1] for r in rows.source_repo]
    rows["url"] = [raw_github_url(r, c, p) for r, c, p in zip(rows.source_repo, rows.source_commit, rows.source_path)]
    return rows.loc[:, list(SAMPLE_COLUMNS)].sort_values(["identity", "file"]).reset_index(drop=True)


def main(args: argparse.Namespace) -> None:
    source = Path(args.mirror) / "manifest.csv"
    if not source.is_file():
        raise LeamError(f"mirror manifest not found: {source} (pass --mirror or set LEAM_FACES_MIRROR)")
    rows = build(pd.read_csv(source, dtype=str, keep_default_na=False))
    write_csv_atomic(args.out, rows)
    read_sample_manifest(args.out)  # the result must pass the stage's own validation
    log.info("wrote %s: %d images of %d identities from %d repositories", args.out, len(rows),
             rows.identity.nunique(), rows.source.nunique())


if __name__ == "__main__":
    parser = stage_parser("build_sample_manifest", __doc__)
    parser.prog = "python manifests/build_sample_manifest.py"
    parser.add_argument("--mirror", default=os.environ.get("LEAM_FACES_MIRROR", "../shared/faces"),
                        help="face mirror folder holding manifest.csv (default: $LEAM_FACES_MIRROR or ../shared/faces)")
    parser.add_argument("--out", default="manifests/sample.csv", help="output CSV (default: manifests/sample.csv)")
    sys.exit(run_stage("build_sample_manifest", main, parser))
