"""Beyond the paper: LEAM-guided privacy protection and the measurements that answer the paper's three questions.

(1) *Where* should a protection change pixels: in LEAM's regions, or would random or location-free pixels do
as well? (2) *What* should go there: black (the paper's occlusion), noise, blur, or an optimised
perturbation? (3) Can *one map per person* protect photos it was not computed on? A perturbation confined
to a mask of a pixel budget and an L-infinity ball is optimised by PGD (:mod:`leam.protect.pgd`) against
an ensemble of source networks and judged on them and on held-out networks it never saw
(:mod:`leam.protect.evaluation`).
"""

from leam.protect.design import QUESTIONS, Condition, Design, networks
from leam.protect.evaluation import Gallery, far_threshold, identity_scores, visibility
from leam.protect.examples import example_strip
from leam.protect.experiment import (
    RESULT_COLUMNS,
    Plan,
    Protected,
    leave_one_out,
    plan,
    protect_photos,
    score_photos,
    without_name,
)
from leam.protect.fills import FILLS, filled
from leam.protect.locations import RANDOM_LOCATIONS, budget_counts, guide_maps, location_masks, person_maps
from leam.protect.pgd import STEP_SCALE, ensemble_score, optimise, quantise
from leam.protect.stats import (
    MEASURES,
    comparisons,
    leave_one_out_document,
    leave_one_out_summary,
    long_results,
    metrics_document,
    plot_tables,
    summary_table,
    visibility_summary,
)

__all__ = ["FILLS", "MEASURES", "QUESTIONS", "RANDOM_LOCATIONS", "RESULT_COLUMNS", "STEP_SCALE", "Condition", "Design",
           "Gallery", "Plan", "Protected", "budget_counts", "comparisons", "ensemble_score", "example_strip", "far_threshold", "filled",
           "guide_maps", "identity_scores", "leave_one_out", "leave_one_out_document", "leave_one_out_summary",
           "location_masks", "long_results", "metrics_document", "networks", "optimise", "person_maps",
           "plan", "plot_tables", "protect_photos", "quantise", "score_photos", "summary_table", "visibility",
           "visibility_summary", "without_name"]
