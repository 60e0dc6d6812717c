"""leam.occlusion.examples: clean | LEAM top-t | random panels that show the masks the drops score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from leam import occlusion as occ
from leam.topt import pixel_ranks, top_count
from tests.occlusion_faces import FRAME, occlusion_faces, smooth_maps  # noqa: F401


def test_example_panel_shows_the_scored_masks_blacked_out(occlusion_faces: dict) -> None:  # noqa: F811
    frame, image_id = occlusion_faces["frames"][0], occlusion_faces["image_id"][0]
    guide = smooth_maps(1, seed=2)[0]
    panel = occ.example_panel(frame, guide, image_id, 0.05, seed=0)
    assert panel.dtype == np.uint8 and panel.shape == (FRAME, 3 * FRAME, 3)
    clean, leam, random = panel[:, :FRAME], panel[:, FRAME:2 * FRAME], panel[:, 2 * FRAME:]
    assert np.array_equal(clean, frame)
    count = top_count(0.05, FRAME * FRAME)
    leam_mask = (pixel_ranks(occ.upsample_maps(torch.from_numpy(guide)[None], FRAME)) < count)[0].numpy()
    random_mask = (pixel_ranks(occ.random_scores([image_id], FRAME, 0, "uniform", 0)) < count)[0].numpy()
    for occluded, mask in ((leam, leam_mask), (random, random_mask)):
        assert (occluded[mask] == 0).all() and np.array_equal(occluded[~mask], frame[~mask])  # black fill, exactly there


def test_example_panels_show_different_people_first() -> None:
    selection = pd.DataFrame({"image_id": ["a/1", "a/2", "b/1", "c/1"], "identity": ["a", "a", "b", "c"]})
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 8, 8, 3), dtype=np.uint8)
    guides = {"s": {"overall": np.random.default_rng(1).random((4, 4, 4), dtype=np.float32)}}
    experiment = occ.Experiment(selection, frames, np.zeros((4, 68, 2)), np.array([3, 2, 1, 0]), [[0]] * 4, guides,
                                np.ones((4, 8, 8), bool), ["overall"], {}, {})
    assert [image_id for image_id, _ in occ.example_panels(experiment, "s", 0.1, 0, "black", 2)] == ["a/1", "b/1"]
    panels = occ.example_panels(experiment, "s", 0.1, 0, "black", 4)
    assert [image_id for image_id, _ in panels] == ["a/1", "b/1", "c/1", "a/2"]
    assert np.array_equal(panels[3][1][:, :8], frames[2])  # a/2 sits at frame row 2
