"""Statistics of the explain curves on tables whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leam.attribution import explain_tables, metrics_document, plot_tables, sign_separation, versus_reference
from leam.attribution.stats import auc_per_image

STEPS = [0.0, 0.1, 0.5]


def synthetic_curves(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Per-photo curves of four methods: leam (good), leam_opposes (bad), saliency (= leam + noise), random."""
    rng = np.random.default_rng(seed)
    slope = {"leam:overall": 1.0, "leam_opposes:overall": 0.3, "saliency": None, "random_face": 0.5}
    rows = []
    for image in range(n):
        for method, s in slope.items():
            s = 1.0 + rng.normal(0, 1e-3) if s is None else s + rng.normal(0, 0.02)
            for f in STEPS:
                rows.append({"source": "a", "target": "a", "method": method, "curve": "deletion", "fraction": f,
                             "image_id": f"p{image}/0", "identity": f"p{image}", "gender": "female",
                             "cosine": 0.9 - s * f})
                rows.append({"source": "a", "target": "a", "method": method, "curve": "insertion", "fraction": f,
                             "image_id": f"p{image}/0", "identity": f"p{image}", "gender": "female",
                             "cosine": 0.2 + s * f})
    return pd.DataFrame(rows)


def test_tests_against_leam_and_the_sign_separation():
    per_image = auc_per_image(synthetic_curves())
    tests = versus_reference(per_image).set_index(["curve", "method"])
    assert tests.loc[("deletion", "random_face"), "verdict"] == "worse"  # random falls slower than LEAM
    assert tests.loc[("insertion", "random_face"), "verdict"] == "worse"
    assert tests.loc[("deletion", "random_face"), "p_value"] < 0.01 and tests.loc[("deletion", "random_face"), "n"] == 12
    assert tests.loc[("deletion", "random_face"), "difference"] > 0
    signs = sign_separation(per_image).set_index("curve")
    assert bool(signs.loc["deletion", "separates"]) and bool(signs.loc["insertion", "separates"])
    assert signs.loc["deletion", "opposite"] == "leam_opposes:overall"
    flipped = per_image.assign(method=per_image.method.map({"leam:overall": "leam_opposes:overall",
                                                            "leam_opposes:overall": "leam:overall"}).fillna(per_image.method))
    assert not sign_separation(flipped).separates.any()  # the supporting map must be the better one


def test_tables_metrics_and_plots():
    tables = explain_tables(synthetic_curves(), n_boot=200)
    auc = tables["auc"].set_index(["curve", "method"])
    assert auc.loc[("deletion", "leam:overall"), "rank"] in (1, 2) and auc.loc[("deletion", "leam_opposes:overall"), "rank"] == 4
    assert auc.loc[("deletion", "leam:overall"), "sign"] == "supports_match"
    low, high = auc.loc[("deletion", "random_face"), ["ci_low", "ci_high"]]
    assert low <= auc.loc[("deletion", "random_face"), "mean"] <= high
    assert set(tables["curves"].fraction) == set(STEPS)
    metrics = metrics_document(tables, 0.3, {"fill": "black"})
    model = metrics["models"]["a"]
    assert model["deletion"]["winner"] in ("leam:overall", "saliency") and model["deletion"]["leam_rank"] in (1, 2)
    assert model["insertion"]["auc"]["random_face"]["mean"] == pytest.approx(auc.loc[("insertion", "random_face"), "mean"])
    assert "random_face" in model["deletion"]["loses_to_leam"]
    assert model["deletion"]["signs"]["leam:overall"]["separates"] is True
    assert metrics["signs_separated"]["deletion"] == {"pairs": 1, "separated": 1}
    assert metrics["n_images"] == 12 and metrics["fill"] == "black" and metrics["transfer"] == {}
    plots = plot_tables(tables["curves"])
    assert set(plots) == {"deletion/a", "insertion/a"}
    assert list(plots["deletion/a"].columns) == ["fraction", "leam_overall", "leam_opposes_overall", "random_face",
                                                 "saliency"]
