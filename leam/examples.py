"""Example PNGs for the report: which images a stage shows, and one writer for them.

A stage's examples folder holds exactly the current run's PNGs, one per image, named
``leam.io.example_name(image_id)`` (``<identity>__<stem>.png``); PNGs of an earlier run are removed first,
so a smaller ``examples`` count or a changed choice leaves no stale picture behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from leam.io import example_name, write_png_atomic

__all__ = ["first_per_identity", "write_examples"]


def first_per_identity(index: pd.DataFrame, count: int) -> pd.DataFrame:
    """The first row of each identity, in ``index`` order, for the first ``count`` identities: a choice that
    depends only on the index (the aligned index is sorted by identity, so these are the first identities by name)."""
    return index.groupby("identity", sort=True).head(1).head(count)


def write_examples(folder: str | os.PathLike, images: Iterable[tuple[str, np.ndarray]]) -> list[Path]:
    """Replace the PNGs in ``folder`` by ``images``: ``(image_id, RGB uint8 (H, W, 3))`` pairs, written atomically.

    ``images`` may be a generator: each picture is made only when it is written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    return [write_png_atomic(folder / example_name(image_id), rgb) for image_id, rgb in images]
