"""Shared plumbing for the thin stage entry points under ``stages/``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from leam.errors import LeamError

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(stage: str, verbose: bool = False) -> logging.Logger:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    return logging.getLogger(f"leam.{stage}")


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with the options every stage shares (``--params``, ``--verbose``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m stages.{stage}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def run_stage(stage: str, main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
              argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run ``main``, and turn a LeamError into one ``error:`` line and exit code 2."""
    args = parser.parse_args(argv)
    log = setup_logging(stage, getattr(args, "verbose", False))
    try:
        main(args)
    except LeamError as exc:
        log.debug("stage failed: %s", exc)  # the user sees the one `error:` line below, not a second copy
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
