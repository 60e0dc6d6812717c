"""Which explanation finds what a face network really uses? Attribution methods compared by deletion and insertion.

Every method explains the same objective as LEAM, ``s = cos(f(x), r)`` of a photo and its reference
embedding, on the same pairs, in the analysis frame. One concept a module:

- ``gradients``: the one forward + backward pass all gradient methods share, and their placement in the frame;
- ``methods``: the registry of methods (LEAM with both signs, LayerCAM's fusion, Grad-CAM, saliency,
  gradient x input, occlusion sensitivity, random baselines); a new method is one small class;
- ``sensitivity``: black-box occlusion sensitivity (a sliding patch);
- ``curves``: deletion and insertion curves over fractions of the face region, and their areas;
- ``experiment``: which photos, and every source's maps scored by itself and by the transfer targets;
- ``stats``: per-photo AUCs, means with CIs, tests against LEAM overall, the sign separation, the metrics.
"""

from __future__ import annotations

from leam.attribution.curves import (
    CURVES,
    curve_auc,
    curve_steps,
    image_curves,
    relevance_ranks,
    removal_masks,
    tie_order,
)
from leam.attribution.experiment import CURVE_TABLE_COLUMNS, Design, Source, Timing, check_scope, plan, run
from leam.attribution.gradients import PairGradients, pair_gradients
from leam.attribution.methods import METHODS, SIGNED, Method, SourceBatch, build_methods, method_sign, register_method
from leam.attribution.sensitivity import occlusion_sensitivity, patch_corners
from leam.attribution.stats import (
    REFERENCE_METHOD,
    auc_per_image,
    explain_tables,
    metrics_document,
    plot_tables,
    sign_separation,
    versus_reference,
)

__all__ = ["CURVES", "CURVE_TABLE_COLUMNS", "METHODS", "REFERENCE_METHOD", "SIGNED", "Design", "Method", "PairGradients",
           "Source", "SourceBatch", "Timing", "auc_per_image", "build_methods", "check_scope", "curve_auc", "curve_steps", "explain_tables",
           "image_curves", "method_sign", "metrics_document", "occlusion_sensitivity",
           "pair_gradients", "patch_corners", "plan", "plot_tables", "register_method", "relevance_ranks",
           "removal_masks", "run", "sign_separation", "tie_order", "versus_reference"]
