"""Deletion and insertion curves on a network whose answer is known: it looks at one patch of the frame only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from leam.attribution import (
    build_methods,
    curve_auc,
    curve_steps,
    image_curves,
    relevance_ranks,
    removal_masks,
    tie_order,
)
from leam.embedding import frames_to_tensor
from leam.errors import LeamError
from leam.occlusion.targets import Target
from leam.topt import top_count
from tests.attribution_nets import FRAME, PADDING, patch_spec, smooth_frames, source_batch, square_region

PATCH = (40, 30, 12)  # y0, x0, side: 144 pixels, 2.3% of the 64 x 64 face square
STEPS = curve_steps([0.01, 0.02, 0.05, 0.1, 0.2, 0.5])


@pytest.fixture(scope="module")
def patch_world():
    """Frames, the patch network as a target, references, and maps: one on the patch, one beside it, random."""
    spec = patch_spec(PATCH)
    model = spec.load(None)
    frames = smooth_frames(3, seed=4)
    n = len(frames)
    target = Target.from_spec(spec, model, np.zeros((n, 68, 2)), FRAME, PADDING)
    x = frames_to_tensor(frames)
    references = F.normalize(target.embed(frames_to_tensor(smooth_frames(3, seed=4) // 2 + 60), np.arange(n)), dim=1)
    y0, x0, side = PATCH
    on_patch = torch.rand((n, FRAME, FRAME), generator=torch.Generator().manual_seed(0)) * 0.1
    on_patch[:, y0:y0 + side, x0:x0 + side] += 1.0
    beside = torch.rand((n, FRAME, FRAME), generator=torch.Generator().manual_seed(1)) * 0.1
    beside[:, 20:20 + side, 60:60 + side] += 1.0
    scores = {"patch": on_patch, "beside": beside, "noise": torch.rand((n, FRAME, FRAME), generator=torch.Generator().manual_seed(2))}
    region = torch.as_tensor(square_region(n))
    ids = [f"p{i}/{i}" for i in range(n)]
    return spec, model, target, frames, x, references, region, scores, ids


def curves_of(world, scores, fill="black"):
    spec, model, target, frames, x, references, region, _, ids = world
    return image_curves(target.embed, x, np.arange(len(x)), references, region, scores, STEPS, fill,
                        tie_order(ids, FRAME, 0), batch_size=8)


def test_the_patch_ranks_first_and_gives_the_steepest_deletion(patch_world):
    *_, region, scores, ids = patch_world
    ranks = relevance_ranks(scores["patch"], region, tie_order(ids, FRAME, 0))
    y0, x0, side = PATCH
    assert bool((ranks[:, y0:y0 + side, x0:x0 + side] < side * side).all())  # the patch's pixels come first
    curves = curves_of(patch_world, scores)
    auc = curve_auc(curves, ["method", "curve", "image"]).set_index(["curve", "method", "image"]).auc
    deletion, insertion = auc["deletion"].unstack("method"), auc["insertion"].unstack("method")
    assert bool((deletion["patch"] < deletion[["beside", "noise"]].min(axis=1)).all())
    assert bool((insertion["patch"] > insertion[["beside", "noise"]].max(axis=1)).all())
    mean = curves.groupby(["method", "curve", "fraction"]).cosine.mean()
    # once the whole patch is gone (144 of 4096 face pixels < 5%) the patch network has nothing left to match
    assert mean["patch", "deletion", 0.05] == pytest.approx(mean["patch", "deletion", 0.5], abs=1e-6)
    assert mean["beside", "deletion", 0.02] == pytest.approx(mean["beside", "deletion", 0.0], abs=1e-6)  # 82 px beside
    assert mean["patch", "deletion", 0.0] == mean["noise", "deletion", 0.0]  # step 0 is shared: the clean photo
    assert mean["patch", "insertion", 0.0] == mean["noise", "insertion", 0.0]  # and the fully filled face


def test_gradient_and_black_box_methods_find_the_patch(patch_world):
    spec, model, target, frames, x, references, region, _, ids = patch_world
    batch = source_batch(model, spec, frames, references, None, image_ids=ids)
    maps = {k: v for m in build_methods(["leam", "gradcam", "saliency", "gradient_x_input", "occlusion", "random_face"],
                                        maps=["overall"], patch=8, stride=4) for k, v in m(batch).items()}
    y0, x0, side = PATCH
    inside = torch.zeros((FRAME, FRAME), dtype=torch.bool)
    inside[y0:y0 + side, x0:x0 + side] = True
    for name in ("leam:overall", "saliency", "gradient_x_input"):
        assert float(maps[name][:, ~inside].abs().max()) == 0.0, name  # no relevance outside the patch
        ranks = relevance_ranks(maps[name], region, tie_order(ids, FRAME, 0))
        relevant = maps[name] > 0  # (LEAM keeps only the patch pixels that support the match)
        counts = relevant.flatten(1).sum(dim=1)
        assert bool((counts > side * side // 4).all()), name
        assert all(bool((ranks[i][relevant[i]] < counts[i]).all()) for i in range(len(ranks))), name
    assert float(maps["occlusion"][:, inside].mean()) > 10 * float(maps["occlusion"][:, ~inside].abs().mean())
    # Grad-CAM's channel-mean weights are global: the weighted activations light up the whole frame
    assert float(maps["gradcam:overall"][:, ~inside].max()) > 0.1
    auc = curve_auc(curves_of(patch_world, maps), ["method", "curve", "image"]).groupby(["curve", "method"]).auc.mean()
    assert auc["deletion"].idxmin() in {"leam:overall", "saliency", "gradient_x_input", "occlusion"}
    assert auc["deletion", "random_face"] > auc["deletion", "leam:overall"]
    assert auc["deletion", "gradcam:overall"] > auc["deletion", "leam:overall"]


def test_removal_masks_count_fractions_of_each_face(patch_world):
    *_, region, scores, ids = patch_world
    region = region.clone()
    region[1, :, :40] = False  # a smaller face: its counts follow its own region
    ranks = relevance_ranks(scores["noise"], region, tie_order(ids, FRAME, 0))
    pixels = region.flatten(1).sum(dim=1)
    for fraction in STEPS[1:]:
        deletion = removal_masks(ranks, region, fraction, "deletion")
        insertion = removal_masks(ranks, region, fraction, "insertion")
        expected = torch.tensor([top_count(fraction, int(p)) for p in pixels])
        assert torch.equal(deletion.flatten(1).sum(dim=1), expected)
        assert not bool((deletion & ~region).any())  # only face pixels are removed
        assert torch.equal(insertion, region & ~deletion)  # insertion restores exactly what deletion removes
    assert not bool(removal_masks(ranks, region, 0.0, "deletion").any())
    assert torch.equal(removal_masks(ranks, region, 0.0, "insertion"), region)
    with pytest.raises(LeamError, match="curve='both' is not valid"):
        removal_masks(ranks, region, 0.1, "both")


def test_ties_break_in_a_seeded_random_order_not_row_major():
    region = torch.ones((2, 32, 32), dtype=torch.bool)
    flat = torch.zeros((2, 32, 32))
    ranks = relevance_ranks(flat, region, tie_order(["a/1", "b/2"], 32, 0))
    first = (ranks < 100).flatten(1).float()
    assert float(first[:, :100].mean()) < 0.5  # row-major tie-breaking would take exactly the first 100 pixels
    assert not torch.equal(first[0], first[1])  # each photo has its own order
    again = relevance_ranks(flat, region, tie_order(["a/1", "b/2"], 32, 0))
    assert torch.equal(ranks, again)  # and it is reproducible
    assert torch.equal(torch.sort(ranks.flatten(1), dim=1).values, torch.arange(1024).expand(2, -1))


def test_curve_auc_is_the_mean_cosine_over_the_fraction_axis():
    curves = pd.DataFrame({"method": "m", "curve": "deletion", "image": 0, "fraction": [0.0, 0.1, 0.5],
                           "cosine": [1.0, 0.8, 0.0]})
    area = (0.1 * (1.0 + 0.8) / 2 + 0.4 * (0.8 + 0.0) / 2) / 0.5
    assert curve_auc(curves, ["method", "curve", "image"]).auc.item() == pytest.approx(area)
    with pytest.raises(LeamError, match=r"explain.fractions=0.0 is not a valid top-t fraction; use a fraction in \(0, 1\]"):
        curve_steps([0.0, 0.5])


def test_an_empty_face_region_is_refused(patch_world):
    spec, model, target, frames, x, references, region, scores, ids = patch_world
    empty = torch.zeros_like(region)
    with pytest.raises(LeamError, match="empty face region"):
        image_curves(target.embed, x, np.arange(3), references, empty, scores, STEPS, "black", tie_order(ids, FRAME, 0))
