"""leam.occlusion.stats: repeats averaged per image, LEAM paired with random per image, summaries, the headline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leam import occlusion as occ


def _drops(images: int = 30, genders: bool = False) -> pd.DataFrame:
    """LEAM drops ~0.3 and two random repeats ~0.05 per image under one model."""
    rng = np.random.default_rng(0)
    rows = []
    for image in range(images):
        rows.append(("m", "m", "overall", 0.01, "leam", 0, image, 0.3 + rng.normal(0, 0.02)))
        for repeat in range(2):
            rows.append(("none", "m", "none", 0.01, "random_uniform", repeat, image, 0.05 + rng.normal(0, 0.02)))
    drops = pd.DataFrame(rows, columns=["source", "target", "map", "threshold", "kind", "repeat", "image", "drop"])
    drops["clean"], drops["occluded"] = 0.9, 0.9 - drops["drop"]
    if genders:
        drops["image_id"] = [f"p{i % 10}/{i}" for i in drops.image]
        drops["gender"] = np.where(drops.image % 2 == 0, "female", "male")
    return drops


def test_statistics_pair_leam_with_random_per_image() -> None:
    per_image = occ.per_image_drops(_drops())
    assert len(per_image) == 60  # repeats averaged
    tests = occ.leam_vs_random(per_image)
    assert len(tests) == 1 and tests.n[0] == 30 and tests.p_value[0] < 1e-4
    assert tests.difference[0] == pytest.approx(0.25, abs=0.02)
    summary = occ.summarize_drops(per_image, n_boot=200)
    head = occ.headline(summary, tests, 0.01, "overall")
    model = head["models"]["m"]
    assert model["leam_ci"][0] < model["leam_drop"] < model["leam_ci"][1]
    assert model["random_uniform_drop"] == pytest.approx(0.05, abs=0.02) and model["p_vs_random_uniform"] < 1e-4
    assert head["transfer"] == {"m__m": model["leam_drop"]}


def test_drop_tables_pool_and_split_genders() -> None:
    drops = _drops(genders=True)
    tables = occ.drop_tables(drops, seed=0)
    assert list(tables) == ["drops", "summary", "by_gender", "tests"] and tables["drops"] is drops
    assert set(tables["by_gender"].gender) == {"female", "male"} and "gender" not in tables["summary"]
    tests = tables["tests"]
    assert tests.gender.tolist() == ["all", "female", "male"] and tests.n.tolist() == [30, 15, 15]
    head = occ.headline(tables["summary"], tests, 0.01, "overall")  # pools genders
    assert head["models"]["m"]["p_vs_random_uniform"] == tests.p_value[0]
    again = occ.drop_tables(drops, seed=0)
    pd.testing.assert_frame_equal(again["summary"], tables["summary"])  # seeded bootstrap
