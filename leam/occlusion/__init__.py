"""Occlusion validation of LEAM maps: hide the most relevant pixels and measure the similarity drop.

The test behind the paper's claim "the map shows what the network uses": for an image and its LEAM
reference, occlude the top-t fraction of the analysis frame ranked by a LEAM map, embed the occluded
image with a *target* model and compare its cosine similarity to the reference with the clean one.
``drop = clean - occluded``. A map that points at what matters gives a larger drop than random masks
with the same pixel count, drawn uniformly over the frame or uniformly over the face region. Using a
map of one model to occlude the input of another (source != target) measures how well relevance
transfers between networks.

Everything spatial is in the analysis frame (S x S pixels, ``leam.frame``). Masks are boolean
(N, S, S); a model sees an occluded frame through its own ``frame -> input`` warp only at embedding
time, so one mask serves every target model.

One concept a module, in the pytorch-grad-cam shape (a mask policy, an imputer, a target):

- ``masks``: which pixels (LEAM maps upsampled to frame pixels, the random baselines' scores; the
  ranking, tie and seeding conventions);
- (the face region itself, where the face and blob baselines may occlude, is ``leam.face_region``);
- ``fills``: what occluded pixels become;
- ``targets``: the model that embeds occluded frames (through ``leam.embedding``, as every stage does);
- ``drops``: the design and the similarity drops of every mask;
- ``selection``: which images are occluded;
- ``stats``: per-image means, bootstrap summaries, LEAM vs random tests, the headline;
- ``experiment``: one run over the pipeline's models (plan, drops of every target, metrics);
- ``examples``: the report's clean | LEAM | random figures.
"""

from __future__ import annotations

from leam.occlusion.drops import Design, Timing, occlusion_drops
from leam.occlusion.examples import example_panel, example_panels
from leam.occlusion.experiment import (
    DROP_COLUMNS,
    Experiment,
    guide_layers,
    metrics_document,
    plan_experiment,
    run_experiment,
)
from leam.occlusion.fills import BLUR_SIGMA_FRACTION, FILLS, fill_values, gaussian_blur, occlude
from leam.occlusion.masks import (
    RANDOM_KINDS,
    TopPixels,
    random_blob_scores,
    random_scores,
    top_pixel_masks,
    upsample_maps,
)
from leam.occlusion.selection import select_images
from leam.occlusion.stats import drop_tables, headline, leam_vs_random, per_image_drops, summarize_drops
from leam.occlusion.targets import Target

__all__ = ["BLUR_SIGMA_FRACTION", "DROP_COLUMNS", "FILLS", "RANDOM_KINDS", "Design", "Experiment", "Target", "Timing",
           "TopPixels", "top_pixel_masks",
           "drop_tables", "example_panel", "example_panels",
           "fill_values", "gaussian_blur", "guide_layers", "headline", "leam_vs_random",
           "metrics_document", "occlude", "occlusion_drops", "per_image_drops", "plan_experiment", "random_blob_scores",
           "random_scores", "run_experiment", "select_images", "summarize_drops",
           "upsample_maps"]
