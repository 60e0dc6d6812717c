"""Helpers of the end-to-end pipeline tests: merge small params into params.yaml, run a command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def merge(base: dict, update: dict) -> dict:
    """Recursively update ``base`` with ``update`` (nested mappings merge, other values replace)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    """Run a command; its stdout + stderr, or an AssertionError with the tail of both."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result.stdout + result.stderr
