"""leam.occlusion.experiment: maps checked against each source's layers, the plan, every target's drops, metrics.

The whole stage (reading and writing) is tested in tests/test_occlusion_stage.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from leam import occlusion as occ
from leam.errors import LeamError
from tests.occlusion_faces import FRAME, occlusion_faces, smooth_maps, tiny_target  # noqa: F401


def test_guide_layers_skip_missing_maps_but_require_the_first() -> None:
    assert occ.guide_layers(["stem", "layer4", "overall"], ["overall", "layer4", "conv9"], "m") == {"overall": 2,
                                                                                                    "layer4": 1}
    with pytest.raises(LeamError, match=r"occlusion.maps\[0\]='conv9' \(the transfer map\) is not computed for 'm'; "
                                        "choose from: stem, overall"):
        occ.guide_layers(["stem", "overall"], ["conv9"], "m")


@pytest.fixture()
def leam_outputs(occlusion_faces: dict) -> tuple[pd.DataFrame, dict]:  # noqa: F811
    """An aligned index of the faces and two sources' LEAM outputs (b lacks the ``stem`` layer)."""
    ids, identities = occlusion_faces["image_id"], occlusion_faces["identity"]
    n = len(ids)
    index = pd.DataFrame({"row": range(n), "image_id": ids, "identity": identities,
                          "gender": ["female" if i == identities[0] else "male" for i in identities]})
    firsts = index.groupby("identity").image_id.first().to_dict()
    seconds = index.groupby("identity").image_id.nth(1).pipe(lambda s: dict(zip(index.identity[s.index], s)))
    meta = index.assign(reference_image_id=[seconds[i] if firsts[i] == image_id else firsts[i]
                                            for image_id, i in zip(ids, identities)], cosine=0.5)
    maps_a = np.stack([smooth_maps(n, seed=1), smooth_maps(n, seed=2)], axis=1)
    outputs = {"a": (maps_a, {"layers": ["stem", "overall"]}, meta),
               "b": (maps_a[:, ::-1], {"layers": ["overall", "layer9"]}, meta)}
    return index, outputs


def test_plan_keeps_the_frames_needed_and_the_guides_per_source(occlusion_faces: dict, leam_outputs) -> None:  # noqa: F811
    index, outputs = leam_outputs
    frames, landmarks = occlusion_faces["frames"], occlusion_faces["landmarks"]
    plan = occ.plan_experiment(index, frames, landmarks, outputs, ["overall", "stem"], max_per_identity=2, seed=0)
    n = len(plan.selection)
    assert n == 4 and plan.left_out == {"no_map_for_all_sources": 0, "no_reference": 0, "subsampled": len(index) - 4}
    assert plan.maps_skipped == {"a": [], "b": ["stem"]} and list(plan.guides["b"]) == ["overall"]
    assert plan.frame_size == FRAME and plan.face_region.shape == (n, FRAME, FRAME)
    for position, frame_row in enumerate(plan.selection.frame_row):
        assert np.array_equal(plan.frames[plan.image_rows[position]], frames[frame_row])
        for local, row in zip(plan.reference_rows[position], plan.selection.reference_rows[position]):
            assert np.array_equal(plan.frames[local], frames[row])
    map_rows = plan.selection.map_row_a.to_numpy()
    np.testing.assert_array_equal(plan.guides["a"]["stem"], outputs["a"][0][map_rows, 0])
    with pytest.raises(LeamError, match="'conv9', computed for no model; maps of 'a': overall"):
        occ.plan_experiment(index, frames, landmarks, outputs, ["overall", "conv9"])
    with pytest.raises(LeamError, match="occlusion.maps is empty"):
        occ.plan_experiment(index, frames, landmarks, outputs, [])


def test_run_transfers_the_first_map_and_metrics_count_the_images(occlusion_faces: dict, leam_outputs) -> None:  # noqa: F811
    index, outputs = leam_outputs
    plan = occ.plan_experiment(index, occlusion_faces["frames"], occlusion_faces["landmarks"], outputs,
                               ["overall", "stem"])
    targets = (tiny_target(plan.landmarks, name, seed) for seed, name in enumerate(["a", "b"]))
    design = occ.Design([0.05], "black", ["uniform"], 1, 0)
    drops, timings = occ.run_experiment(plan, targets, design, transfer=True, batch_size=4)
    assert list(drops.columns) == occ.DROP_COLUMNS and set(timings) == {"a", "b"}
    leam = drops[drops.kind == "leam"]
    pairs = leam.groupby(["target", "source"])["map"].agg(lambda maps: sorted(set(maps))).to_dict()
    assert pairs == {("a", "a"): ["overall", "stem"], ("a", "b"): ["overall"], ("b", "a"): ["overall"],
                     ("b", "b"): ["overall"]}
    assert set(drops.image_id) == set(plan.selection.image_id) and drops.gender.notna().all()
    own, _ = occ.run_experiment(plan, [tiny_target(plan.landmarks, "b", 1)], design, transfer=False)
    assert set(own[own.kind == "leam"].source) == {"b"}
    tables = occ.drop_tables(drops, seed=0)
    metrics = occ.metrics_document(plan, tables, 0.05, torch.device("cpu"))
    assert metrics["n_images"] == len(plan.selection) and metrics["maps_skipped"] == {"b": ["stem"]}
    assert metrics["device"] == "cpu" and metrics["discarded_random_face"] == 0
    assert set(metrics["transfer"]) == {"a__a", "a__b", "b__a", "b__b"}
