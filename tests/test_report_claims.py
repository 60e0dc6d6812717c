"""The verdict rule and the answers of leam.report.claims, on small synthetic metrics documents."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from leam.report import claims
from leam.report.claims import AGREE, DISAGREE, NO_VERDICT, PARTLY, Estimate, decide, direction, magnitude


def est(mean, low=None, high=None, paper=None, quantity="x") -> Estimate:
    return Estimate(quantity, mean, low, high, paper)


# ------------------------------------------------------------------------------------------------ rule
@pytest.mark.parametrize("higher, lower, outcome", [
    (est(0.5, 0.4, 0.6), est(0.2, 0.1, 0.3), "holds"),
    (est(0.5, 0.3, 0.6), est(0.2, 0.1, 0.35), "unclear"),  # CIs overlap
    (est(0.1, 0.05, 0.15), est(0.5, 0.4, 0.6), "reversed"),
    (est(0.5), est(0.2), "holds"),  # no CI: the means alone
    (est(0.2), est(0.2), "unclear"),
    (est(float("nan")), est(0.2), "unclear"),
])
def test_direction_compares_the_two_cis(higher, lower, outcome):
    assert direction(higher, lower) == outcome


@pytest.mark.parametrize("estimate, outcome", [
    (est(0.25, 0.20, 0.30, (0.189, 0.297)), "inside"),
    (est(0.35, 0.295, 0.40, (0.189, 0.297)), "inside"),  # the CI touches the range
    (est(0.50, 0.45, 0.55, (0.189, 0.297)), "near"),  # 1.7x the top: same order of magnitude
    (est(0.594, 0.58, 0.60, (0.189, 0.297)), "near"),  # exactly 2x
    (est(0.60, 0.59, 0.61, (0.189, 0.297)), "far"),
    (est(0.09, 0.08, 0.10, (0.189, 0.297)), "far"),  # below half the bottom
    (est(0.1148, None, None, (0.1148, 0.1148)), "inside"),  # a single value, met exactly
    (est(0.083, 0.074, 0.093, (0.1148, 0.1148)), "near"),
    (est(0.0, 0.0, 0.0, (0.1148, 0.1148)), "far"),
    (est(0.3), None),  # no paper figure
])
def test_magnitude_against_the_paper_range(estimate, outcome):
    assert magnitude(estimate) == outcome


def test_decide_is_the_table_printed_on_the_methods_page():
    """VERDICT_RULE's table and decide() are the same rule: parse the markdown and compare every cell."""
    rows = [line for line in claims.VERDICT_RULE.splitlines() if line.startswith("| ") and "**" in line]
    names = {"holds": "holds", "unclear (CIs overlap)": "unclear", "reversed": "reversed",
             "none (a magnitude-only claim)": None}
    assert len(rows) == 4
    for row in rows:
        label, matching, far = [cell.strip() for cell in row.strip("|").split("|")]
        outcome = names[label]
        assert decide(outcome, ["inside", "near"]) == matching.strip("*")
        assert decide(outcome, ["inside", "far"]) == far.strip("*")
    assert f"factor of {claims.MAGNITUDE_FACTOR:g}" in claims.VERDICT_RULE
    with pytest.raises(ValueError, match="holds"):
        decide("sideways", [])


# ------------------------------------------------------------------------------------------------ claims
def occlusion_doc(leam, leam_ci, kinds: dict, threshold=0.01, transfer=None) -> dict:
    entry = {"n": 10, "leam_drop": leam, "leam_ci": list(leam_ci)}
    for kind, (mean, ci) in kinds.items():
        entry[f"{kind}_drop"], entry[f"{kind}_ci"], entry[f"p_vs_{kind}"] = mean, list(ci), 0.01
    return {"threshold": threshold, "map": "overall", "models": {"m": entry}, "transfer": transfer or {}}


def test_occlusion_answers_one_per_random_baseline():
    doc = occlusion_doc(0.09, (0.08, 0.10), {"random_uniform": (0.03, (0.02, 0.04)),   # paper-like: agree
                                              "random_face": (0.085, (0.07, 0.10)),   # overlap, face 3x: disagree
                                              "random_blob": (0.004, (0.003, 0.005))})  # apart, blob far: partly
    answers = {a.key: a for a in claims.occlusion_answers(doc)}
    assert answers["occlusion.random_uniform"].verdict == AGREE
    assert answers["occlusion.random_face"].verdict == DISAGREE  # overlap and 0.085 is 3x the paper's 0.0286
    assert answers["occlusion.random_blob"].verdict == PARTLY
    uniform = answers["occlusion.random_uniform"]
    assert [e.mean for e in uniform.estimates] == [0.09, 0.03]
    assert uniform.estimates[0].source == "metrics/occlusion.json models.m.leam_drop"
    assert uniform.extra["p_value"] == 0.01
    assert "CIs apart in the paper's direction" in uniform.reason
    reversed_doc = occlusion_doc(0.01, (0.005, 0.015), {"random_uniform": (0.03, (0.025, 0.035))})
    assert claims.occlusion_answers(reversed_doc)[0].verdict == DISAGREE
    assert claims.occlusion_answers(reversed_doc)[0].direction == "reversed"


def test_a_threshold_other_than_the_papers_is_said():
    doc = occlusion_doc(0.09, (0.08, 0.10), {"random_uniform": (0.03, (0.02, 0.04))}, threshold=0.05)
    answer = claims.occlusion_answers(doc)[0]
    assert "ours at top 0.05, the paper's at top 0.01" in answer.reason
    assert answer.threshold == 0.05


def test_region_answers_take_the_headline_and_the_cis_from_the_summary():
    correlation = {"threshold": 0.01, "headline": {"a": {"nose": 0.25, "skin": 0.4}, "b": {"nose": 0.7},
                                                   "c": {"nose": None}}}
    summary = pd.DataFrame([
        {"model": "a", "layer": "overall", "threshold": 0.01, "level": "region", "part": "nose", "mean": 0.25,
         "ci_low": 0.22, "ci_high": 0.28},
        {"model": "a", "layer": "overall", "threshold": 0.05, "level": "region", "part": "nose", "mean": 0.3,
         "ci_low": 0.0, "ci_high": 1.0},
        {"model": "a", "layer": "l1", "threshold": 0.01, "level": "region", "part": "nose", "mean": 0.3,
         "ci_low": 0.0, "ci_high": 1.0}])
    cis = claims.region_cis(summary, 0.01)
    assert cis == {"a": (0.22, 0.28)}
    answers = {a.model: a for a in claims.region_answers(correlation, cis)}
    assert set(answers) == {"a", "b"}  # a missing share is no answer
    assert answers["a"].verdict == AGREE and answers["a"].estimates[0].interval == (0.22, 0.28)
    assert answers["a"].reason == "inside the paper's range"
    assert answers["b"].verdict == DISAGREE and "2.36x the top of the paper's 0.189-0.297" in answers["b"].reason
    assert "no CI for nose share" in answers["b"].reason
    assert claims.region_answers(None) == [] and claims.region_answers({}) == []


def bc_entry(same, same_ci, different, different_ci, apart=True) -> dict:
    return {"same_mean": same, "same_ci": list(same_ci), "different_mean": different,
            "different_ci": list(different_ci), "same_more_similar": apart}


def test_similarity_answers_use_the_overall_map_and_count_the_layers():
    doc = {"threshold": 0.01, "models": {
        "paperlike": {"layers": {"l1": {"bc_top": bc_entry(0.4, (0.38, 0.42), 0.1, (0.09, 0.11))},
                                 "l2": {"bc_top": bc_entry(0.5, (0.4, 0.6), 0.45, (0.4, 0.5), apart=False)},
                                 "overall": {"bc_top": bc_entry(0.45, (0.44, 0.46), 0.08, (0.07, 0.09)),
                                             "emd_top": bc_entry(10.0, (9.0, 11.0), 20.0, (19.0, 21.0))}}},
        "dlib_like": {"layers": {"overall": {"bc_top": bc_entry(0.58, (0.576, 0.585), 0.51, (0.507, 0.515))}}},
        "no_overall": {"layers": {"l1": {"bc_top": bc_entry(0.4, (0.3, 0.5), 0.1, (0.0, 0.2))}}}}}
    answers = {a.model: a for a in claims.similarity_answers(doc)}
    assert set(answers) == {"paperlike", "dlib_like"}
    assert answers["paperlike"].verdict == AGREE
    assert answers["paperlike"].extra["layers"] == (1, 2)
    assert answers["paperlike"].reason.endswith("CIs apart in 1 of 2")
    assert answers["dlib_like"].verdict == PARTLY  # apart, but different-people BC is 3.9x the paper's top
    assert "different BC 3.92x the top of the paper's 0.04-0.13" in answers["dlib_like"].reason
    emd = claims.emd_answers(doc)
    assert [(a.model, a.verdict, a.direction) for a in emd] == [("paperlike", NO_VERDICT, "holds")]
    assert "expected direction" in emd[0].reason  # lower EMD = closer: different is expected higher


def test_transfer_counts_the_models_a_map_beats_random_on():
    models = {name: {"leam_drop": 0.1, "leam_ci": [0.09, 0.11], "random_uniform_drop": rand,
                     "random_uniform_ci": [rand - 0.01, rand + 0.01]}
              for name, rand in (("a", 0.02), ("b", 0.02), ("c", 0.06))}
    doc = {"threshold": 0.01, "map": "overall", "models": models,
           "transfer": {"a__a": 0.1, "a__b": 0.05, "a__c": 0.065, "b__a": 0.01, "b__c": 0.001}}
    summary = pd.DataFrame([{"source": "a", "target": "b", "map": "overall", "threshold": 0.01, "kind": "leam",
                             "mean": 0.05, "ci_low": 0.04, "ci_high": 0.06}])
    answers = {a.model: a for a in claims.transfer_answers(doc, summary)}
    assert answers["a"].verdict == PARTLY and answers["a"].extra["wins"] == 1  # beats b, not c (0.065 in c's CI)
    assert answers["a"].extra["per_target"][0][0].interval == (0.04, 0.06)  # CI from the summary
    assert answers["b"].verdict == DISAGREE and answers["b"].extra["targets"] == 2
    assert "c" not in answers  # no transfer rows
    assert math.isclose(answers["a"].estimates[0].mean, (0.05 + 0.065) / 2)


def variability_doc() -> dict:
    def cv(mean, low, high, n=10):
        return {"mean": mean, "ci": [low, high], "n": n}
    return {"threshold": 0.01, "models": {"m": {"overall": {
        "map_cv_top": {"all": cv(2.0, 1.9, 2.1), "female": cv(2.6, 2.4, 2.8), "male": cv(2.0, 1.8, 2.2),
                       "female_vs_male_p": 0.004},
        "share_cv_region": {"nose": 0.5, "skin": 0.3, "not_labelled": 0.1, "eyes": None}}}}}


def test_variability_and_gender_answers_have_no_paper_verdict():
    [variability] = claims.variability_answers(variability_doc())
    assert variability.verdict == NO_VERDICT and variability.estimates[0].interval == (1.9, 2.1)
    assert variability.extra["steadiest_region"] == "skin"  # not_labelled is not a region of the face
    [gender] = claims.gender_answers(variability_doc())
    assert gender.verdict == NO_VERDICT and gender.direction == "holds"
    assert gender.reason == "women's maps vary more (CIs apart); Mann-Whitney p = 0.004"
    rows = pd.DataFrame([{"model": "m", "gender": "female", "mean": 0.3, "ci_low": 0.2, "ci_high": 0.4},
                         {"model": "m", "gender": "male", "mean": 0.35, "ci_low": 0.3, "ci_high": 0.45},
                         {"model": "n", "gender": "female", "mean": 0.3, "ci_low": 0.2, "ci_high": 0.4}])
    [split] = claims.gender_split_answers(rows, "nose share", "shares_by_gender.csv")
    assert split.model == "m" and split.reason == "nose share: no clear difference (CIs overlap)"


def test_person_answers_compare_plain_means():
    answers = claims.person_answers({"m": (0.25, 3)}, {"m": {"leam": (0.09, 2), "random_uniform": (0.03, 2)},
                                                       "n": {"leam": (0.09, 2)}}, 0.01)
    assert [(a.key, a.verdict) for a in answers] == [("person.nose", AGREE), ("person.occlusion", AGREE)]
    assert answers[0].reason.endswith("mean of 3 photos, no CI")
    assert answers[1].reason.startswith("means in the paper's order")


def test_all_answers_without_metrics_is_empty_and_every_key_is_known():
    assert claims.all_answers() == []
    doc = occlusion_doc(0.09, (0.08, 0.10), {"random_uniform": (0.03, (0.02, 0.04))})
    answers = claims.all_answers(occlusion=doc, variability=variability_doc())
    assert {a.key for a in answers} == {"occlusion.random_uniform", "variability.map_cv", "gender"}
    for answer in answers:
        assert answer.claim.page in ("occlusion", "variability", "gender")
        assert re.fullmatch(r"[^\n]+", answer.figures_text())


def protect_doc() -> dict:
    """metrics/protect.json's shape: per question, per condition its fill, location and pooled success."""
    def entry(fill, location, held_out, sources):
        def success(mean, low, high):
            return {"verification_success": {"mean": mean, "ci": [low, high]}}
        return {"fill": fill, "location": location, "held_out": success(*held_out), "sources": success(*sources)}
    own = entry("optimised", "leam:overall", (0.6, 0.5, 0.7), (0.9, 0.85, 0.95))
    return {"n_photos": 12, "sources": ["a", "b"], "held_out": ["c"], "far": 0.001,
            "clean": {"held_out": {"verification_success": 0.1}, "sources": {"verification_success": 0.05}},
            "where": {"optimised-leam_overall": own,
                      "optimised-random_face": entry("optimised", "random_face", (0.2, 0.1, 0.3), (0.5, 0.4, 0.6)),
                      "optimised-sparse": entry("optimised", "sparse", (0.3, 0.2, 0.4), (0.95, 0.9, 0.99))},
            "what": {"optimised-leam_overall": own,
                     "black-leam_overall": entry("black", "leam:overall", (0.65, 0.55, 0.75), (0.3, 0.2, 0.4))},
            "person": {"optimised-leam_overall": own,
                       "optimised-person_overall": entry("optimised", "person:overall", (0.6, 0.5, 0.7),
                                                         (0.9, 0.85, 0.95))}}


def test_protect_answers_say_which_condition_won_and_whether_the_cis_overlap():
    answers = {(a.key, a.extra["role"]): a for a in claims.protect_answers(protect_doc())}
    assert list(answers) == [(f"protect.{q}", r) for q in ("where", "what", "person") for r in ("held_out", "sources")]
    where = answers[("protect.where", "held_out")]  # the own map's CI lies above both others
    assert where.verdict == NO_VERDICT and where.model == "held-out networks (c)" and where.claim.page == "protect"
    assert [e.quantity for e in where.estimates] == ["own LEAM map (overall)", "random face pixels",
                                                     "sparse top-gradient pixels"]
    assert where.reason == "own LEAM map (overall) wins: its CI lies above every other's"
    assert where.extra["sentence"].startswith(
        "On the held-out networks (c), verification success at FAR 0.001 over 12 photos: own LEAM map (overall) "
        "0.600 [0.500, 0.700]; random face pixels 0.200 [0.100, 0.300]; sparse top-gradient pixels 0.300 "
        "[0.200, 0.400] (clean photos 0.100). Own LEAM map (overall) wins")
    sources = answers[("protect.where", "sources")]  # sparse has the higher mean, CIs overlap
    assert sources.reason == ("no clear winner: the highest mean is sparse top-gradient pixels (0.950), whose CI "
                              "overlaps those of own LEAM map (overall); own LEAM map (overall) beats random face "
                              "pixels with CIs apart; the CI of own LEAM map (overall) overlaps those of sparse "
                              "top-gradient pixels")
    what = answers[("protect.what", "sources")]  # named by fill; the optimised one wins
    assert [e.quantity for e in what.estimates] == ["the optimised perturbation", "black pixels"]
    assert what.extra["beats"] == ["black pixels"] and what.reason.endswith("wins: its CI lies above every other's")
    assert answers[("protect.what", "held_out")].extra["best"] == ["black pixels"]
    person = answers[("protect.person", "held_out")]  # the person-level map is the subject; a tie is no winner
    assert person.estimates[0].quantity == "person-level map (overall)"
    assert person.reason.startswith("no clear winner: the highest mean (0.600) is shared by person-level map "
                                    "(overall), own LEAM map (overall)")
    assert claims.protect_answers(None) == [] and claims.protect_answers({"where": {}}) == []
