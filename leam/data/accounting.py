"""Every photo is kept or a counted discard: the align stage's bookkeeping and ``metrics/data.json``.

The faces stage hands over ``index.csv`` (kept photos, ``INDEX_COLUMNS``), ``discards.csv``
(``DISCARD_COLUMNS``) and ``summary.json`` (with ``not_selected``: photos the ``data.max_*`` caps left
out, counted but not listed). The align stage keeps or discards each indexed photo and then drops the
rest of any identity left with fewer than ``data.min_images_per_identity`` aligned photos. Its
``discards.csv`` lists both stages' discards with a ``stage`` column, so for every step
``inputs = kept + discarded (+ not_selected)`` (docs/ARCHITECTURE.md, "Metrics").
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from leam import io
from leam.data.manifest import DISCARD_COLUMNS, INDEX_COLUMNS, TOO_FEW_IMAGES, too_few_images
from leam.errors import LeamError

__all__ = ["account_alignment", "data_metrics", "drop_small_identities", "read_faces_discards", "read_faces_index",
           "read_faces_summary"]


def read_faces_index(path: str | Path) -> pd.DataFrame:
    """The faces stage's index (all columns as strings); a missing file or missing columns is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise LeamError(f"faces index not found: {path} (run `dvc repro faces` first)")
    index = io.read_csv_checked(path, INDEX_COLUMNS, stage="faces", dtype=str, keep_default_na=False)
    if index.image_id.duplicated().any():
        raise LeamError(f"{path} has duplicate image_id {index.image_id[index.image_id.duplicated()].iloc[0]!r}")
    return index.reset_index(drop=True)


def read_faces_discards(faces_dir: str | Path) -> pd.DataFrame:
    """The faces stage's discards (DISCARD_COLUMNS, empty when it wrote no ``discards.csv``)."""
    path = Path(faces_dir) / "discards.csv"
    if not path.is_file():
        return pd.DataFrame(columns=list(DISCARD_COLUMNS))
    upstream = io.read_csv_checked(path, DISCARD_COLUMNS, allow_empty=True, stage="faces", dtype=str,
                                   keep_default_na=False)
    return upstream[list(DISCARD_COLUMNS)]


def read_faces_summary(faces_dir: str | Path) -> dict | None:
    """The faces stage's ``summary.json``, or None when there is none."""
    path = Path(faces_dir) / "summary.json"
    return io.read_json_checked(path, stage="faces") if path.is_file() else None


def drop_small_identities(kept: pd.DataFrame, min_images: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows of identities left with fewer than ``min_images`` aligned photos: ``(keep mask (N,), discards)``.

    Such an identity has no reference photo for LEAM and no same-identity pair for the similarity tests;
    it leaves here, with reason ``too_few_images`` (the faces stage's reason for the same rule), rather than
    unnoticed in a later stage.
    """
    keep = ~too_few_images(kept, min_images)
    dropped = kept[~keep]
    return keep, pd.DataFrame({"image_id": dropped.image_id, "path": dropped.path, "reason": TOO_FEW_IMAGES},
                              columns=list(DISCARD_COLUMNS))


def account_alignment(index: pd.DataFrame, kept_rows: Sequence[int], discarded: Sequence[tuple[int, str]],
                      upstream: pd.DataFrame, min_images: int) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Which photos the aligned data keep, and why each other one left.

    ``kept_rows`` / ``discarded`` ((row, reason) pairs) are rows of the faces ``index`` that alignment kept
    or discarded (``leam.align.AlignmentResult.kept`` / ``.discards``); ``upstream`` is the faces stage's
    discards. Returns ``(aligned index, keep, discards)``: the aligned index (``row`` + INDEX_COLUMNS,
    ``row`` numbering the kept photos 0..N-1), ``keep`` the mask over the aligned arrays, and the discards
    (DISCARD_COLUMNS + ``stage``: the faces stage's first, then alignment's, then ``too_few_images``).
    """
    kept = index.iloc[list(kept_rows)].reset_index(drop=True)
    keep, too_few = drop_small_identities(kept, min_images)
    kept = kept[keep].reset_index(drop=True)
    kept.insert(0, "row", range(len(kept)))
    ours = pd.DataFrame([(index.image_id[i], index.path[i], reason) for i, reason in discarded],
                        columns=list(DISCARD_COLUMNS))
    discards = pd.concat([upstream.assign(stage="faces"), ours.assign(stage="align"), too_few.assign(stage="align")],
                         ignore_index=True)
    return kept[["row", *INDEX_COLUMNS]], keep, discards


def data_metrics(index: pd.DataFrame, kept: pd.DataFrame, discards: pd.DataFrame,
                 faces_summary: dict | None) -> dict:
    """``metrics/data.json``: totals, discards by reason, per gender, and ``steps`` (each step's inputs =
    kept + discarded (+ not_selected)); ``index`` is the faces index, ``kept`` the aligned one."""
    identity_gender = dict(zip(index.identity, index.gender))
    # <identity>/<stem>; ids without a slash (an IMDb-Face row without a usable name, a file outside any
    # identity folder) belong to no known identity
    discard_identity = discards.image_id.where(discards.image_id.str.contains("/"), "").str.split("/").str[0]
    discard_gender = discard_identity.map(identity_gender).fillna("unknown")
    identities = pd.concat([index.identity, discard_identity[discard_identity != ""]])
    metrics = {
        "identities": int(identities.nunique()),
        "images": int(len(kept) + len(discards)),
        "kept": int(len(kept)),
        "kept_identities": int(kept.identity.nunique()),
        "discarded": int(len(discards)),
        "discarded_by_reason": {k: int(v) for k, v in discards.reason.value_counts().sort_index().items()},
        "by_gender": {},
    }
    for gender in sorted(set(index.gender) | set(discard_gender)):
        kept_g = kept[kept.gender == gender]
        discarded_g = int((discard_gender == gender).sum())
        metrics["by_gender"][gender] = {
            "identities": int(kept_g.identity.nunique()),
            "images": int(len(kept_g) + discarded_g),
            "kept": int(len(kept_g)),
            "discarded": discarded_g,
        }
    if faces_summary:
        metrics["faces"] = {k: v for k, v in faces_summary.items() if isinstance(v, (int, float, str, bool))}
    upstream = int(discards.stage.eq("faces").sum()) if "stage" in discards else 0
    not_selected = int((faces_summary or {}).get("not_selected", 0))
    metrics["not_selected"] = not_selected
    metrics["inputs"] = metrics["images"] + not_selected
    metrics["steps"] = {
        "faces": {"inputs": int(len(index) + upstream + not_selected), "kept": int(len(index)), "discarded": upstream,
                  "not_selected": not_selected},
        "align": {"inputs": int(len(index)), "kept": int(len(kept)), "discarded": int(len(discards) - upstream)},
    }
    return metrics
