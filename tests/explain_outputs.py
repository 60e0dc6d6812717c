"""Synthetic but consistent outputs of the explain stage (data/explain/*, metrics/explain.json) for report tests.

The tables come from the real ``leam.attribution.stats`` functions applied to made-up per-photo curves of two
models (one transfer pair each way), so the page shows what the stage would write.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from leam.attribution import explain_tables, metrics_document, plot_tables
from leam.io import json_safe

MODELS = ("alpha", "beta")
SLOPES = {"leam:overall": 1.0, "leam_opposes:overall": 0.4, "layercam_fusion": 0.9, "saliency": 1.3,
          "random_face": 0.6}
FRACTIONS = [0.01, 0.1, 0.5]


def synthetic_curves(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for source in MODELS:
        for target in MODELS:
            for image in range(n):
                for method, slope in SLOPES.items():
                    s = slope + rng.normal(0, 0.05)
                    for f in [0.0, *FRACTIONS]:
                        for curve, cosine in (("deletion", 0.8 - s * f), ("insertion", 0.2 + s * f)):
                            rows.append({"source": source, "target": target, "method": method, "curve": curve,
                                         "fraction": f, "image_id": f"p{image}/0", "identity": f"p{image}",
                                         "gender": "female", "cosine": cosine})
    return pd.DataFrame(rows)


def write_explain_outputs(root: Path) -> dict[str, pd.DataFrame]:
    """Write data/explain/*.csv and metrics/explain.json under ``root``; returns the tables."""
    out = root / "data" / "explain"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (root / "metrics").mkdir(exist_ok=True)
    tables = explain_tables(synthetic_curves(), n_boot=100)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    for name, table in plot_tables(tables["curves"]).items():
        (out / "plots" / name).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "plots" / f"{name}.csv", index=False)
    metrics = metrics_document(tables, 0.3, {"fractions": FRACTIONS, "fill": "black", "face_region": "landmarks"})
    (root / "metrics" / "explain.json").write_text(json.dumps(json_safe(metrics)))
    return tables
