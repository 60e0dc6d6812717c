"""Stage `inputs`: fingerprints of the files that params name, one JSON per stage that reads them.

Writes (leam.inputs.stage_inputs):
  data/inputs/faces.json  the face source (data.source): sample -> data.manifest; imdb_face -> data.imdb_csv and
                          data.labels_csv; folder -> every photo under data.folder_root (<identity>/<file> ->
                          sha256), labels.csv, and every entry the folder source does not take, with its reason
  data/inputs/leam.json   leam.pairs_file (when leam.reference=pairs)
  data/inputs/parse.json  parsing.farl_model_path (when parsing.backend=farl)
Local files get their sha256; URLs are recorded as given (never fetched).

dvc.yaml runs this stage on every `dvc repro` (always_changed), and `faces`, `leam@*` and `parse` depend on
their file: DVC cannot depend on a param path that may be "" or a URL, so this is how adding a photo to a
folder source reruns `faces` and everything after it. When nothing changed the files are byte for byte the
same and no other stage reruns. It takes about as long as loading params plus hashing a folder source.

Example:
  python -m stages.inputs && cat data/inputs/faces.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from leam.cli import run_stage, stage_parser
from leam.config import load_config
from leam.inputs import stage_inputs
from leam.io import write_json_atomic

log = logging.getLogger("leam.inputs")


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    fingerprints = stage_inputs(config)
    for stage, fingerprint in fingerprints.items():
        write_json_atomic(Path(args.out) / f"{stage}.json", fingerprint)
    photos = sum(len(i.get("photos", {})) for i in fingerprints["faces"]["inputs"])
    log.info("inputs: faces (%s) %d file(s)%s, leam %d, parse %d -> %s", fingerprints["faces"]["source"],
             len(fingerprints["faces"]["inputs"]), f" ({photos} photos)" if photos else "",
             len(fingerprints["leam"]["inputs"]), len(fingerprints["parse"]["inputs"]), args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("inputs", __doc__)
    parser.add_argument("--out", default="data/inputs", help="output folder (default: %(default)s)")
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("inputs", main, build_parser()))
