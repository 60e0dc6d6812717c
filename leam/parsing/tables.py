"""The parse stage's tables: per-image region areas, discards, the ``classes.json`` document and the metrics.

Areas are fractions of the whole analysis frame (S * S pixels), per region of
``leam.parsing.classes.REGIONS`` (the sum of its classes); ``labelled_fraction`` is the share of pixels
that are not NOT_LABELLED (255). Discarded faces keep their row (all 255) with ``parsed=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leam.parsing.agreement import class_iou, landmark_agreement
from leam.parsing.classes import CLASS_ID, NOT_LABELLED, REGIONS, class_table
from leam.parsing.landmarks import SETTINGS as LANDMARK_SETTINGS
from leam.parsing.landmarks import ParseResult
from leam.parsing.mesh import MESH_SETTINGS, mesh_topology

__all__ = ["REFERENCE_LABELS", "ParseTables", "parse_metrics", "parse_tables", "region_areas"]


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


REFERENCE_LABELS = "reference_labels.npy"
"""The reference parser's labels beside ``labels.npy`` (mesh backend: the landmark parser's), same rows."""


def parse_tables(aligned: pd.DataFrame, result: ParseResult, backend: str, settings: dict,
                 reference: ParseResult | None = None) -> ParseTables:
    """Tables of one parse run: ``aligned`` is the aligned index (``row, image_id, identity, gender``) whose rows
    ``result`` labels; ``settings`` are the ``parsing.*`` keys (the landmark parser's shape keys are recorded).
    A landmark-parser ``reference`` adds ``reference_parsed`` to the index and ``reference`` (backend, labels file,
    classes) to the class table."""
    table = aligned[["row", "image_id", "identity", "gender"]].copy()
    table["parsed"] = result.kept
    if reference is not None:
        table["reference_parsed"] = reference.kept
    table["labelled_fraction"] = (result.labels != NOT_LABELLED).mean(axis=(1, 2)).round(6)
    for name, values in region_areas(result.labels).items():
        table[name] = values.round(6)
    discards = pd.DataFrame({"image_id": aligned["image_id"], "reason": result.reasons})
    discards = discards[discards.reason != ""]
    document = class_table(result.available, backend)
    document["discards"] = {str(k): int(v) for k, v in discards.reason.value_counts().items()}
    if backend == "landmarks" or reference is not None:
        document["landmark_parser"] = {key: settings[key] for key in LANDMARK_SETTINGS}
    if reference is not None:
        document["reference"] = {"backend": "landmarks", "labels": REFERENCE_LABELS,
                                 "available": list(reference.available)}
    if backend == "mesh":
        from leam.parsing.face_mesh import MESH_CROP_PADDING, MESH_INPUT, SELFIE_INPUT

        document["mesh_parser"] = {**{key: settings[key] for key in MESH_SETTINGS},
                                   "mesh_crop": {"size": MESH_INPUT, "dlib_chip_padding": MESH_CROP_PADDING},
                                   "segmentation_input": SELFIE_INPUT, "topology": mesh_topology().source}
    return ParseTables(table, discards, document)


def parse_metrics(result: ParseResult, backend: str, landmarks: np.ndarray,
                  reference: ParseResult | None = None) -> dict:
    """``metrics/parsing.json``: faces parsed and discarded, classes produced; for the mesh backend also its
    agreement with dlib's landmarks (pixels, ``leam.parsing.agreement``) and the per-class IoU against the
    landmark parser's ``reference`` labels, over the faces both kept."""
    reasons = pd.Series([r for r in result.reasons if r], dtype=str)
    metrics = {"backend": backend, "faces": int(len(result.kept)), "parsed": int(result.kept.sum()),
               "discarded": int((~result.kept).sum()),
               "discarded_by_reason": {str(k): int(v) for k, v in reasons.value_counts().items()},
               "classes_available": len(result.available), "available": list(result.available)}
    if backend == "mesh" and result.points is not None:
        both = result.kept & (reference.kept if reference is not None else True)
        metrics["mesh_vs_dlib_px"] = landmark_agreement(result.points[both], landmarks[both], mesh_topology())
        metrics["mesh_vs_dlib_px"]["faces"] = int(both.sum())
        if reference is not None:
            shared = [name for name in result.available if name in reference.available and name != "background"]
            metrics["iou_vs_landmarks"] = class_iou(result.labels[both], reference.labels[both], shared)
    return metrics
