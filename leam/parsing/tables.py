"""The parse stage's tables: per-image region areas, discards and the ``classes.json`` document.

Areas are fractions of the whole analysis frame (S * S pixels), per region of
``leam.parsing.classes.REGIONS`` (the sum of its classes); ``labelled_fraction`` is the share of pixels
that are not NOT_LABELLED (255). Discarded faces keep their row (all 255) with ``parsed=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leam.parsing.classes import CLASS_ID, NOT_LABELLED, REGIONS, class_table
from leam.parsing.landmarks import SETTINGS as LANDMARK_SETTINGS
from leam.parsing.landmarks import ParseResult

__all__ = ["ParseTables", "parse_tables", "region_areas"]


@dataclass
class ParseTables:
    """``index`` (data/parsing/index.csv), ``discards`` (discards.csv) and ``classes`` (classes.json)."""

    index: pd.DataFrame
    discards: pd.DataFrame
    classes: dict


def region_areas(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Fraction of each frame in every region, ``area_<region>`` -> (N,), from one bincount per image (N, S, S)."""
    counts = np.stack([np.bincount(row.reshape(-1), minlength=256) for row in labels]) / labels[0].size
    return {f"area_{region}": counts[:, [CLASS_ID[name] for name in members]].sum(1)
            for region, members in REGIONS.items()}


def parse_tables(aligned: pd.DataFrame, result: ParseResult, backend: str, settings: dict) -> ParseTables:
    """Tables of one parse run: ``aligned`` is the aligned index (``row, image_id, identity, gender``) whose rows
    ``result`` labels; ``settings`` are the ``parsing.*`` keys (the landmark parser's shape keys are recorded)."""
    table = aligned[["row", "image_id", "identity", "gender"]].copy()
    table["parsed"] = result.kept
    table["labelled_fraction"] = (result.labels != NOT_LABELLED).mean(axis=(1, 2)).round(6)
    for name, values in region_areas(result.labels).items():
        table[name] = values.round(6)
    discards = pd.DataFrame({"image_id": aligned["image_id"], "reason": result.reasons})
    discards = discards[discards.reason != ""]
    document = class_table(result.available, backend)
    document["discards"] = {str(k): int(v) for k, v in discards.reason.value_counts().items()}
    if backend == "landmarks":
        document["landmark_parser"] = {key: settings[key] for key in LANDMARK_SETTINGS}
    return ParseTables(table, discards, document)
