"""Stage helper `params`: check params.yaml against the typed schema (leam.config) without running anything.

Every stage validates the whole file first, so a typo or a bad value anywhere stops it with one line
naming the key, the bad value and what is allowed. This command does only that check:

  python -m stages.params                     # OK, or `error: <key>=<value> is not valid; ...` (exit code 2)
  python -m stages.params --params other.yaml
  python -m stages.params --help              # every key with its type, default and meaning (below)

Keys not in params.yaml take the defaults listed below; unknown keys are errors.
"""

from __future__ import annotations

import argparse
import sys

from leam.cli import run_stage, stage_parser
from leam.config import describe_schema, load_config


def main(args: argparse.Namespace) -> None:
    config = load_config(args.params)
    print(f"OK: {args.params} is valid ({len(config.models)} models: {', '.join(config.models)})")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("params", __doc__)
    parser.epilog = "schema (key  [type]  default, then its meaning):\n\n" + describe_schema()
    return parser


if __name__ == "__main__":
    sys.exit(run_stage("params", main, build_parser()))
