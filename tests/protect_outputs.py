"""Synthetic but consistent outputs of the protect stage (data/protect/*, metrics/protect.json) for report tests.

The tables come from the real ``leam.protect`` statistics (``long_results``, ``summary_table``, ``comparisons``,
``metrics_document``, ``plot_tables``) applied to made-up per-photo results of two source and one held-out
network, so the page shows what the stage would write. The own LEAM map is made to stop verification on
more of the person's other photos than every other location (a clear winner on the held-out network).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from leam.io import json_safe
from leam.protect import Design, comparisons, long_results, metrics_document, plot_tables, summary_table

SOURCES, HELD_OUT = ("alpha", "beta"), ("gamma",)
PHOTOS = [f"p{i}/0" for i in range(14)]  # > 13 photos: scipy's Wilcoxon with ties is asymptotic, not a 2**n permutation test
STRENGTH = {"leam:overall": 0.8, "leam:stem": 0.5, "random_face": 0.15, "random_blob": 0.2, "sparse": 0.45,
            "person:overall": 0.7}
"""Probability that a protected photo is no longer verified, per location of an optimised condition."""
FILLS = {"black": 0.35, "noise": 0.05, "blur": 0.25}
DESIGN = Design(("overall", "stem"), 0.05, (0.01, 0.1), 16.0, (8.0, 32.0), tuple(FILLS), ("face", "blob"), True,
                True, 10)


def synthetic_results(seed: int = 0) -> pd.DataFrame:
    """One row per (condition, photo, network) with ``leam.protect.RESULT_COLUMNS``."""
    rng = np.random.default_rng(seed)
    rows = []
    for condition in DESIGN.conditions():
        p = FILLS.get(condition.fill) or STRENGTH[condition.location] * min(1.0, condition.budget / 0.05) ** 0.3
        for image_id in PHOTOS:
            for network in (*SOURCES, *HELD_OUT):
                role = "sources" if network in SOURCES else "held_out"
                q = p if role == "sources" else p * 0.8
                verified = float(rng.uniform() > q)
                drop = float(q * 0.2 + rng.normal(0, 0.01))
                rows.append({"condition": condition.name, "image_id": image_id, "identity": image_id.split("/")[0],
                             "gender": "female", "network": network, "role": role, "cosine_clean": 0.9,
                             "cosine": 0.9 - drop, "drop": drop, "verified_clean": 1.0, "verified": verified,
                             "identified_clean": True, "identified": bool(verified)})
    return pd.DataFrame(rows)


def write_protect_outputs(root: Path, photos: list[Path] | None = None) -> dict[str, pd.DataFrame]:
    """Write data/protect/{conditions,summary,visibility,tests}.csv, plots/*.csv, examples/*.png (from ``photos``,
    real faces) and metrics/protect.json under ``root``; returns the tables."""
    out = root / "data" / "protect"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (root / "metrics").mkdir(exist_ok=True)
    conditions = DESIGN.conditions()
    results = synthetic_results()
    long = long_results(results)
    summary = summary_table(long, 200, 0)
    own = next(c for c, q in conditions.items() if "what" in q and c.fill == "optimised")
    rng = np.random.default_rng(1)
    visibility = pd.DataFrame([{"condition": c.name, "image_id": i, "psnr": float(rng.uniform(35, 45)),
                                "ssim": float(rng.uniform(0.95, 1.0)), "changed_pixels": int(rng.integers(100, 900)),
                                "linf": int(c.epsilon) if c.epsilon else 255} for c in conditions for i in PHOTOS])
    tables = {"conditions": pd.DataFrame([{"condition": c.name, "fill": c.fill, "location": c.location,
                                           "budget": c.budget, "epsilon": c.epsilon, "questions": " ".join(q)}
                                          for c, q in conditions.items()]),
              "summary": summary, "visibility": visibility, "tests": comparisons(long, conditions, own)}
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    for name, table in plot_tables(summary, conditions).items():
        table.to_csv(out / "plots" / f"{name}.csv", index=False)
    scope = {"n_photos": len(PHOTOS), "sources": list(SOURCES), "held_out": list(HELD_OUT), "budget": DESIGN.budget,
             "epsilon": DESIGN.epsilon, "steps": DESIGN.steps, "far": 0.001,
             "thresholds": {m: 0.4 for m in (*SOURCES, *HELD_OUT)}, "face_region": "landmarks",
             "person_photos_mean": 2.0, "left_out": {"subsampled": 0}, "device": "cpu"}
    metrics = metrics_document(summary, visibility, conditions, scope)
    (root / "metrics" / "protect.json").write_text(json.dumps(json_safe(metrics)))
    (out / "timing.json").write_text(json.dumps({"pgd": 1.0, "pgd_jobs": 10.0, "seconds": 2.0}))
    if photos:
        (out / "examples").mkdir(exist_ok=True)
        for index, photo in enumerate(photos[:2]):
            face = cv2.resize(cv2.imread(str(photo)), (64, 64), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / "examples" / f"p{index}__0.png"), np.concatenate([face] * 4, axis=1))
    tables["metrics"] = metrics
    return tables
