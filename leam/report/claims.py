"""The paper's claims against this run: each claim's figures from the metrics files and a verdict.

The report opens every page with an answer block built from these objects, and the overview collects them
into one table. Nothing here is written by hand per run: every number is read from ``metrics/*.json`` (the
region shares' CIs, which ``metrics/correlation.json`` does not carry, from
``data/correlation/shares_summary.csv``), and the verdict follows one rule, :data:`VERDICT_RULE`, printed on
the methods page.

The paper (LEAM, *Explainable AI for Analyzing Person-Specific Patterns in Facial Recognition Tasks*) gives
these figures, all for the top 1% of pixels:

- regions: the nose holds 18.9-29.7% of the critical (top-t) pixels;
- person-specific patterns: Bhattacharyya coefficient (BC) of the overall maps 0.32-0.57 for two photos of
  the same person vs 0.04-0.13 for different people;
- occlusion: hiding the top 1% LEAM pixels lowers the cosine similarity by 0.1148 vs 0.0286 for as many
  random pixels; the maps transfer across models (no figure given).

The verdict rule (direction from whether the 95% CIs are apart, magnitude from how far our figure is from
the paper's, then a small table) is :data:`VERDICT_RULE`, in markdown, the one text of it: the methods page
prints it and every answer block links there. Checks the paper gives no figure for (EMD, variability,
gender) get the direction outcome only and the verdict :data:`NO_VERDICT`.

Example::

    >>> from leam.report.claims import occlusion_answers
    >>> doc = {"threshold": 0.01, "map": "overall", "models": {"m": {
    ...     "leam_drop": 0.09, "leam_ci": [0.08, 0.10],
    ...     "random_uniform_drop": 0.03, "random_uniform_ci": [0.02, 0.04]}}}
    >>> [a.verdict for a in occlusion_answers(doc)]
    ['agree']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

__all__ = ["AGREE", "Answer", "DISAGREE", "Estimate", "MAGNITUDE_FACTOR", "NO_VERDICT", "PAPER", "PARTLY",
           "PaperClaim", "RANDOM_KINDS", "VERDICT_RULE", "all_answers", "decide", "direction", "emd_answers",
           "explain_answers", "gender_answers", "gender_split_answers", "magnitude", "person_answers", "occlusion_answers", "protect_answers", "protect_label", "region_answers", "region_cis",
           "similarity_answers", "transfer_answers", "variability_answers"]

AGREE, PARTLY, DISAGREE, NO_VERDICT = "agree", "partly", "disagree", "no paper figure"
HOLDS, UNCLEAR, REVERSED = "holds", "unclear", "reversed"
INSIDE, NEAR, FAR = "inside", "near", "far"

MAGNITUDE_FACTOR = 2.0
"""A mean within this factor of the paper's range (range low / 2 .. range high x 2) is the same order."""

PAPER_THRESHOLD = 0.01
"""The fraction of pixels behind every figure of the paper (top 1%)."""

RANDOM_KINDS = ("random_uniform", "random_face", "random_blob")
"""Random occlusion baselines; ``random_uniform`` is the paper's control, the other two are stricter."""


@dataclass(frozen=True)
class PaperClaim:
    """One claim of the paper: where it is answered and what the paper says."""

    key: str
    page: str  # the report page (file stem) that answers it
    title: str  # short name, a row of the overview table
    statement: str  # what the paper says, in words, with its figures
    paper: str  # the paper's figures, short ("0.189-0.297")


PAPER: dict[str, PaperClaim] = {claim.key: claim for claim in (
    PaperClaim("regions.nose", "regions", "Nose share of the critical pixels",
               "The nose holds 18.9-29.7% of the critical (top 1%) pixels.", "0.189-0.297"),
    PaperClaim("patterns.bc", "patterns", "Same person vs different people (BC)",
               "Maps of two photos of the same person overlap more (BC 0.32-0.57) than maps of different "
               "people (BC 0.04-0.13).", "same 0.32-0.57 vs different 0.04-0.13"),
    *(PaperClaim(f"occlusion.{kind}", "occlusion", f"LEAM vs {kind} occlusion",
                 "Occluding the top 1% LEAM pixels lowers the cosine similarity more (0.1148) than occluding "
                 "as many random pixels (0.0286)" + ("." if kind == "random_uniform" else
                                                     f"; `{kind}` is a stricter control than the paper's."),
                 "LEAM 0.1148 vs random 0.0286") for kind in RANDOM_KINDS),
    PaperClaim("occlusion.transfer", "occlusion", "LEAM maps transfer to other models",
               "LEAM-selected pixels of one model also lower the match of other models more than random "
               "pixels do (no figure given).", "direction only"),
)}

OUR_CHECKS: dict[str, PaperClaim] = {claim.key: claim for claim in (
    PaperClaim("patterns.emd", "patterns", "Same person vs different people (EMD)",
               "Our check (the paper gives no EMD figure): maps of the same person are closer in Earth Mover's "
               "Distance than maps of different people.", "no figure"),
    PaperClaim("variability.map_cv", "variability", "Within-person variability (map CV)",
               "Our check (the paper gives no figure): how much one person's maps vary across photos.",
               "no figure"),
    PaperClaim("gender", "gender", "Women vs men", "Our check (the paper gives no figure): do the headline "
               "figures differ between women and men?", "no figure"),
    PaperClaim("person.nose", "person", "Nose share of this person's top-t pixels",
               "The paper's nose figure (18.9-29.7% of the critical pixels), applied to one person's photos.",
               "0.189-0.297"),
    PaperClaim("person.occlusion", "person", "LEAM vs random_uniform on this person's photos",
               "The paper's occlusion figure (LEAM 0.1148 vs random 0.0286 at the top 1%), applied to one "
               "person's photos.", "LEAM 0.1148 vs random 0.0286"),
    *(PaperClaim(f"explain.{curve}", "explain", f"Best {curve} ranking",
                 f"Our check (beyond the paper): which attribution method's ranking of the face pixels gives the "
                 f"best {curve} curve ({'lowest' if curve == 'deletion' else 'highest'} area), and where "
                 f"`leam:overall` ranks.", "no figure") for curve in ("deletion", "insertion")),
    PaperClaim("protect.where", "protect", "Where to protect",
               "Beyond the paper (its question 1): does a perturbation in the photo's own LEAM map stop "
               "verification more often than the same optimisation in random face pixels, a random disc or the "
               "sparse top-gradient pixels, at the same pixel budget?", "no figure"),
    PaperClaim("protect.what", "protect", "What to put there",
               "Beyond the paper (its question 2): in the same LEAM mask, does an optimised perturbation stop "
               "verification more often than black pixels (the paper's occlusion), noise or a blur?", "no figure"),
    PaperClaim("protect.person", "protect", "One map per person",
               "Beyond the paper (its question 3): does a person-level map (the mean of the person's other "
               "photos' maps) protect a photo it was not computed on as well as the photo's own map, and better "
               "than random face pixels?", "no figure"),
    PaperClaim("explain.signs", "explain", "Supporting vs opposing map",
               "Our check (beyond the paper): does the curve tell LEAM's map of what supports the match "
               "(`leam:overall`) from its map of what opposes it (`leam_opposes:overall`)?", "no figure"),
)}
"""Answers that are not in the overview's table: checks the paper gives no figure for, and the paper's
figures applied to one person (the person page)."""

PAPER_FIGURES = {
    "nose share": (0.189, 0.297),
    "same BC": (0.32, 0.57),
    "different BC": (0.04, 0.13),
    "LEAM drop": (0.1148, 0.1148),
    "random drop": (0.0286, 0.0286),
}
"""The paper's value or range per quantity (a single value as a range of width 0)."""

VERDICT_RULE = f"""\
Each claim of the paper has a **direction** (a comparison, such as *same person > different people*) and/or
**magnitudes** (the paper's value or range for a figure); every figure of ours is a mean with its 95 %
bootstrap CI, read from `metrics/*.json` (region shares' CIs from `data/correlation/shares_summary.csv`).

- **Direction**: *holds* when the two 95 % CIs do not overlap and lie in the paper's order; *reversed* when
  they do not overlap and lie in the opposite order; *unclear* when they overlap.
- **Magnitude**, per figure: *inside* when our CI overlaps the paper's range (a single value counts as a range
  of width 0); *near* when our mean is within a factor of {MAGNITUDE_FACTOR:g} of the range (from range low /
  {MAGNITUDE_FACTOR:g} to range high × {MAGNITUDE_FACTOR:g}: the same order of magnitude); otherwise *far*.

| direction | every figure inside or near | some figure far |
|---|---|---|
| holds | **agree** | **partly** |
| unclear (CIs overlap) | **partly** | **disagree** |
| reversed | **disagree** | **disagree** |
| none (a magnitude-only claim) | **agree** | **disagree** |

The paper's figures are for the top {PAPER_THRESHOLD:.0%} of pixels; when `threshold` differs, ours are at
`threshold` and the answer says so. Every claim uses the `overall` map (the mean of the max-normalised layer
maps), source model = target model for occlusion. Transfer has a direction only: it *agrees* when the
transferred LEAM drop's CI lies above the target's `random_uniform` CI on every other model, *partly* on some,
*disagrees* on none. Checks the paper gives no figure for (EMD, variability, gender) report the direction
only, with the verdict *{NO_VERDICT}*.
"""
"""The rule in markdown, printed once on the methods page (the answer blocks link to it)."""


@dataclass(frozen=True)
class Estimate:
    """One figure of ours: a mean with its 95% CI (None = not available), and the paper's range if any."""

    quantity: str  # "nose share", "same BC", "LEAM drop", ...
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None
    paper: tuple[float, float] | None = None
    source: str = ""  # where the number is read from, e.g. "metrics/occlusion.json models.m.leam_drop"

    @property
    def interval(self) -> tuple[float, float]:
        """The CI, or the mean twice when the CI is not available (a CI of width 0)."""
        low = self.mean if self.ci_low is None or not math.isfinite(self.ci_low) else self.ci_low
        high = self.mean if self.ci_high is None or not math.isfinite(self.ci_high) else self.ci_high
        return float(low), float(high)

    def text(self, digits: int = 3) -> str:
        """'0.123 [0.100, 0.150]', or '0.123' without a CI."""
        if self.ci_low is None or self.ci_high is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


@dataclass(frozen=True)
class Answer:
    """One claim for one model: our figures, the outcome of the rule and a one-line reason."""

    key: str
    model: str
    estimates: tuple[Estimate, ...]
    verdict: str
    reason: str
    direction: str | None = None
    magnitudes: tuple[str, ...] = ()
    threshold: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def claim(self) -> PaperClaim:
        return PAPER.get(self.key) or OUR_CHECKS[self.key]

    @property
    def page(self) -> str:
        return self.claim.page

    def figures_text(self, digits: int = 3) -> str:
        """Our figures in one line: 'same BC 0.37 [0.36, 0.38] vs different BC 0.24 [0.23, 0.24]'."""
        return " vs ".join(f"{e.quantity} {e.text(digits)}" for e in self.estimates)


# ------------------------------------------------------------------------------------------------ rule
def direction(higher: Estimate, lower: Estimate) -> str:
    """``holds`` when ``higher``'s CI lies above ``lower``'s, ``reversed`` when below, else ``unclear``."""
    h_low, h_high = higher.interval
    l_low, l_high = lower.interval
    if not all(math.isfinite(v) for v in (h_low, h_high, l_low, l_high)):
        return UNCLEAR
    if h_low > l_high:
        return HOLDS
    if h_high < l_low:
        return REVERSED
    return UNCLEAR


def magnitude(estimate: Estimate, factor: float = MAGNITUDE_FACTOR) -> str | None:
    """``inside`` (CI overlaps the paper's range), ``near`` (mean within ``factor`` of it) or ``far``.

    None when the estimate has no paper figure.
    """
    if estimate.paper is None:
        return None
    low, high = estimate.paper
    ci_low, ci_high = estimate.interval
    if not math.isfinite(estimate.mean):
        return FAR
    if ci_low <= high and ci_high >= low:
        return INSIDE
    if low / factor <= estimate.mean <= high * factor:
        return NEAR
    return FAR


def decide(direction_outcome: str | None, magnitudes: Sequence[str | None]) -> str:
    """The verdict of :data:`VERDICT_RULE` from a direction outcome (None = the claim has none) and magnitudes."""
    far = any(m == FAR for m in magnitudes)
    if direction_outcome is None:
        return DISAGREE if far else AGREE
    if direction_outcome == HOLDS:
        return PARTLY if far else AGREE
    if direction_outcome == UNCLEAR:
        return DISAGREE if far else PARTLY
    if direction_outcome == REVERSED:
        return DISAGREE
    raise ValueError(f"direction {direction_outcome!r} is not one of: {HOLDS}, {UNCLEAR}, {REVERSED}, None")


def _describe_magnitude(estimate: Estimate, outcome: str | None) -> str | None:
    """'nose share 1.66x the top of the paper's 0.189-0.297' for a figure outside the paper's range; None
    inside it or without a paper figure."""
    if outcome in (None, INSIDE) or estimate.paper is None:
        return None
    low, high = estimate.paper
    shown = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    if estimate.mean > high:
        end, ratio = ("" if low == high else "the top of "), (estimate.mean / high if high > 0 else math.inf)
    else:
        end, ratio = ("" if low == high else "the bottom of "), (estimate.mean / low if low > 0 else math.nan)
    return f"{estimate.quantity} {ratio:.2f}x {end}the paper's {shown}"


_DIRECTION_TEXT = {HOLDS: "CIs apart in the paper's direction", UNCLEAR: "CIs overlap",
                   REVERSED: "CIs apart in the opposite direction"}
_MEANS_TEXT = {HOLDS: "means in the paper's order", UNCLEAR: "equal means", REVERSED: "means in the opposite order"}


def _judge(key: str, model: str, estimates: Sequence[Estimate], pair: tuple[int, int] | None,
           threshold: float | None, paper_claim: bool = True, extra: dict | None = None) -> Answer:
    """Apply the rule: ``pair`` = (index expected higher, index expected lower) or None (no direction)."""
    outcome = direction(estimates[pair[0]], estimates[pair[1]]) if pair is not None else None
    outcomes = tuple(magnitude(e) for e in estimates) if paper_claim else ()
    no_ci = any(e.ci_low is None or e.ci_high is None for e in estimates)
    reasons = []
    if outcome is not None:
        text = _MEANS_TEXT[outcome] if no_ci else _DIRECTION_TEXT[outcome]
        reasons.append(text if paper_claim else text.replace("the paper's", "the expected"))
    if paper_claim:
        far = [text for e, m in zip(estimates, outcomes) if (text := _describe_magnitude(e, m)) and m == FAR]
        near = [text for e, m in zip(estimates, outcomes) if (text := _describe_magnitude(e, m)) and m == NEAR]
        if far:
            reasons.append("far from the paper: " + "; ".join(far))
        if near:
            reasons.append("same order as the paper: " + "; ".join(near))
        if not far and not near and any(m is not None for m in outcomes):
            reasons.append("inside the paper's range" if len(estimates) == 1 else "inside the paper's figures")
        verdict = decide(outcome, [m for m in outcomes if m is not None])
    else:
        verdict = NO_VERDICT
    missing_ci = [e.quantity for e in estimates if e.ci_low is None or e.ci_high is None]
    if missing_ci:
        reasons.append("no CI for " + ", ".join(missing_ci))
    if threshold is not None and paper_claim and not math.isclose(threshold, PAPER_THRESHOLD):
        reasons.append(f"ours at top {threshold:g}, the paper's at top {PAPER_THRESHOLD:g}")
    return Answer(key, model, tuple(estimates), verdict, "; ".join(reasons), outcome,
                  tuple(m for m in outcomes if m is not None), threshold, dict(extra or {}))


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ci(pair) -> tuple[float | None, float | None]:
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return _number(pair[0]), _number(pair[1])
    return None, None


# ------------------------------------------------------------------------------------------------ claims
def region_cis(shares_summary, threshold: float, part: str = "nose", layer: str = "overall"
               ) -> dict[str, tuple[float, float]]:
    """{model: (ci_low, ci_high)} of one region's share at ``threshold`` from ``shares_summary.csv`` rows."""
    if shares_summary is None or len(shares_summary) == 0:
        return {}
    rows = shares_summary[(shares_summary["layer"] == layer) & (shares_summary["level"] == "region")
                          & (shares_summary["part"] == part)]
    rows = rows[[math.isclose(float(t), float(threshold), rel_tol=1e-9, abs_tol=1e-12) for t in rows["threshold"]]]
    return {str(r["model"]): (float(r["ci_low"]), float(r["ci_high"])) for _, r in rows.iterrows()}


def region_answers(correlation: Mapping | None, cis: Mapping[str, tuple[float, float]] | None = None
                   ) -> list[Answer]:
    """The nose claim per model: ``headline.<model>.nose`` of ``metrics/correlation.json`` (overall map, top
    ``threshold``) with its CI from ``cis`` (:func:`region_cis`); a magnitude-only claim."""
    if not correlation:
        return []
    threshold = _number(correlation.get("threshold"))
    answers = []
    for model, regions in (correlation.get("headline") or {}).items():
        share = _number((regions or {}).get("nose"))
        if share is None:
            continue
        low, high = (cis or {}).get(model, (None, None))
        estimate = Estimate("nose share", share, low, high, PAPER_FIGURES["nose share"],
                            f"metrics/correlation.json headline.{model}.nose")
        answers.append(_judge("regions.nose", model, [estimate], None, threshold))
    return answers


def _pair_estimates(entry: Mapping, names: tuple[str, str], paper: tuple[str | None, str | None],
                    source: str) -> list[Estimate] | None:
    same, different = _number(entry.get("same_mean")), _number(entry.get("different_mean"))
    if same is None or different is None:
        return None
    return [Estimate(names[0], same, *_ci(entry.get("same_ci")), PAPER_FIGURES.get(paper[0]) if paper[0] else None,
                     f"{source}.same_mean"),
            Estimate(names[1], different, *_ci(entry.get("different_ci")),
                     PAPER_FIGURES.get(paper[1]) if paper[1] else None, f"{source}.different_mean")]


def similarity_answers(similarity: Mapping | None, layer: str = "overall") -> list[Answer]:
    """Same vs different BC of the ``layer`` map at top ``threshold`` per model
    (``models.<model>.layers.<layer>.bc_top`` of ``metrics/similarity.json``): direction same > different,
    magnitudes against the paper's two ranges."""
    if not similarity:
        return []
    threshold = _number(similarity.get("threshold"))
    answers = []
    for model, document in (similarity.get("models") or {}).items():
        entry = ((document or {}).get("layers") or {}).get(layer, {}).get("bc_top")
        if not entry:
            continue
        estimates = _pair_estimates(entry, ("same BC", "different BC"), ("same BC", "different BC"),
                                    f"metrics/similarity.json models.{model}.layers.{layer}.bc_top")
        if estimates is not None:
            apart, layers = _layer_separation(document, "bc_top")
            answer = _judge("patterns.bc", model, estimates, (0, 1), threshold, extra={"layers": (apart, layers)})
            if layers:
                answer = replace(answer, reason=f"{answer.reason}; per layer, same > different with CIs apart in "
                                                f"{apart} of {layers}")
            answers.append(answer)
    return answers


def _layer_separation(document: Mapping, name: str) -> tuple[int, int]:
    """(layers whose same vs different CIs are apart, layers) over the model's layers except ``overall``."""
    layers = {k: v for k, v in (document.get("layers") or {}).items() if k != "overall" and name in (v or {})}
    apart = sum(bool(v[name].get("same_more_similar")) for v in layers.values())
    return apart, len(layers)


def emd_answers(similarity: Mapping | None, layer: str = "overall") -> list[Answer]:
    """Same vs different EMD (pixels; lower = closer) of the ``layer`` map: direction only (our check)."""
    if not similarity:
        return []
    threshold = _number(similarity.get("threshold"))
    answers = []
    for model, document in (similarity.get("models") or {}).items():
        entry = ((document or {}).get("layers") or {}).get(layer, {}).get("emd_top")
        if not entry:
            continue
        estimates = _pair_estimates(entry, ("same EMD", "different EMD"), (None, None),
                                    f"metrics/similarity.json models.{model}.layers.{layer}.emd_top")
        if estimates is not None:  # lower EMD = more alike: different is expected higher
            answers.append(_judge("patterns.emd", model, estimates, (1, 0), threshold, paper_claim=False))
    return answers


def occlusion_answers(occlusion: Mapping | None, kinds: Sequence[str] = RANDOM_KINDS) -> list[Answer]:
    """LEAM vs each random baseline per model, source = target (``models.<model>`` of
    ``metrics/occlusion.json``): direction LEAM > random, magnitudes against 0.1148 and 0.0286."""
    if not occlusion:
        return []
    threshold = _number(occlusion.get("threshold"))
    answers = []
    for model, entry in (occlusion.get("models") or {}).items():
        leam = _number((entry or {}).get("leam_drop"))
        if leam is None:
            continue
        source = f"metrics/occlusion.json models.{model}"
        leam_estimate = Estimate("LEAM drop", leam, *_ci(entry.get("leam_ci")), PAPER_FIGURES["LEAM drop"],
                                 f"{source}.leam_drop")
        for kind in kinds:
            value = _number(entry.get(f"{kind}_drop"))
            if value is None:
                continue
            random_estimate = Estimate(f"{kind} drop", value, *_ci(entry.get(f"{kind}_ci")),
                                       PAPER_FIGURES["random drop"], f"{source}.{kind}_drop")
            answers.append(_judge(f"occlusion.{kind}", model, [leam_estimate, random_estimate], (0, 1), threshold,
                                  extra={"p_value": _number(entry.get(f"p_vs_{kind}"))}))
    return answers


def transfer_answers(occlusion: Mapping | None, summary=None, baseline: str = "random_uniform") -> list[Answer]:
    """Per source model: on how many other models its LEAM pixels lower the match more than ``baseline``.

    Transferred means come from ``transfer.<source>__<target>`` of ``metrics/occlusion.json``; their CIs,
    which the JSON does not carry, from ``summary`` (``data/occlusion/summary.csv``) when given, else the
    mean alone is compared with the target's baseline CI.
    """
    if not occlusion:
        return []
    threshold = _number(occlusion.get("threshold"))
    map_name = occlusion.get("map")
    models = occlusion.get("models") or {}
    pairs: dict[str, list[str]] = {}
    for key in occlusion.get("transfer") or {}:
        source, _, target = key.partition("__")
        if source != target and target in models:
            pairs.setdefault(source, []).append(target)
    answers = []
    for source, targets in pairs.items():
        wins, details, transferred, baselines = 0, [], [], []
        for target in targets:
            mean = _number(occlusion["transfer"][f"{source}__{target}"])
            rand = _number(models[target].get(f"{baseline}_drop"))
            if mean is None or rand is None:
                continue
            low, high = _summary_ci(summary, source, target, map_name, threshold)
            ours = Estimate(f"LEAM drop {source}->{target}", mean, low, high)
            control = Estimate(f"{baseline} drop on {target}", rand, *_ci(models[target].get(f"{baseline}_ci")))
            outcome = direction(ours, control)
            wins += outcome == HOLDS
            details.append(f"{target} {outcome}")
            transferred.append(ours)
            baselines.append(control)
        if not details:
            continue
        verdict = AGREE if wins == len(details) else PARTLY if wins else DISAGREE
        mean_ours = sum(e.mean for e in transferred) / len(transferred)
        mean_base = sum(e.mean for e in baselines) / len(baselines)
        estimates = (Estimate("mean transferred LEAM drop", mean_ours, source="metrics/occlusion.json transfer"),
                     Estimate(f"mean {baseline} drop of those models", mean_base,
                              source=f"metrics/occlusion.json models.*.{baseline}_drop"))
        reason = (f"LEAM beats {baseline} (CIs apart) on {wins} of {len(details)} other models: "
                  + ", ".join(details))
        answers.append(Answer("occlusion.transfer", source, estimates, verdict, reason, None, (), threshold,
                              {"wins": wins, "targets": len(details),
                               "per_target": list(zip(transferred, baselines))}))
    return answers


def _summary_ci(summary, source: str, target: str, map_name, threshold) -> tuple[float | None, float | None]:
    if summary is None or len(summary) == 0 or threshold is None:
        return None, None
    rows = summary[(summary["source"] == source) & (summary["target"] == target) & (summary["kind"] == "leam")]
    if map_name is not None:
        rows = rows[rows["map"] == map_name]
    rows = rows[[math.isclose(float(t), threshold, rel_tol=1e-9, abs_tol=1e-12) for t in rows["threshold"]]]
    if rows.empty:
        return None, None
    return _number(rows.iloc[0]["ci_low"]), _number(rows.iloc[0]["ci_high"])


def variability_answers(variability: Mapping | None, layer: str = "overall") -> list[Answer]:
    """Mean map CV of the top-t ``layer`` maps over persons per model (``models.<model>.<layer>.map_cv_top.all``
    of ``metrics/variability.json``) and the region whose share varies least; no paper figure."""
    if not variability:
        return []
    threshold = _number(variability.get("threshold"))
    answers = []
    for model, layers in (variability.get("models") or {}).items():
        entry = ((layers or {}).get(layer) or {}).get("map_cv_top", {}).get("all")
        mean = _number((entry or {}).get("mean"))
        if mean is None:
            continue
        estimate = Estimate("map CV", mean, *_ci(entry.get("ci")),
                            source=f"metrics/variability.json models.{model}.{layer}.map_cv_top.all")
        shares = {k: v for k, v in ((layers.get(layer) or {}).get("share_cv_region") or {}).items()
                  if k != "not_labelled" and _number(v) is not None}
        steadiest = min(shares, key=shares.get) if shares else None
        reason = (f"most consistent region: {steadiest} (share CV {shares[steadiest]:.2f})" if steadiest
                  else "no share CV per region")
        answers.append(Answer("variability.map_cv", model, (estimate,), NO_VERDICT, reason, None, (), threshold,
                              {"steadiest_region": steadiest, "n": (entry or {}).get("n")}))
    return answers


def gender_answers(variability: Mapping | None, layer: str = "overall") -> list[Answer]:
    """Women vs men per model: the map CV of the top-t ``layer`` maps (``map_cv_top.female`` / ``.male`` of
    ``metrics/variability.json``) with its CIs and the Mann-Whitney p; direction only, no paper figure."""
    if not variability:
        return []
    threshold = _number(variability.get("threshold"))
    answers = []
    for model, layers in (variability.get("models") or {}).items():
        entry = ((layers or {}).get(layer) or {}).get("map_cv_top") or {}
        female, male = entry.get("female"), entry.get("male")
        if not female or not male or _number(female.get("mean")) is None or _number(male.get("mean")) is None:
            continue
        source = f"metrics/variability.json models.{model}.{layer}.map_cv_top"
        estimates = [Estimate("map CV women", float(female["mean"]), *_ci(female.get("ci")), source=f"{source}.female"),
                     Estimate("map CV men", float(male["mean"]), *_ci(male.get("ci")), source=f"{source}.male")]
        outcome = direction(estimates[0], estimates[1])
        p = _number(entry.get("female_vs_male_p"))
        text = {HOLDS: "women's maps vary more (CIs apart)", REVERSED: "men's maps vary more (CIs apart)",
                UNCLEAR: "no clear difference (CIs overlap)"}[outcome]
        reason = text + (f"; Mann-Whitney p = {p:.2g}" if p is not None else "")
        answers.append(Answer("gender", model, tuple(estimates), NO_VERDICT, reason, outcome, (), threshold,
                              {"p_value": p}))
    return answers


def gender_split_answers(rows, quantity: str, source: str, higher_is: str = "women") -> list[Answer]:
    """Women vs men per model from a long by-gender table (columns ``model``, ``gender``, ``mean``, ``ci_low``,
    ``ci_high``; one row per model and gender, already cut to one layer, threshold and part): direction only.

    ``quantity`` names the figure ("nose share"); ``higher_is`` words the direction women > men.
    """
    if rows is None or len(rows) == 0:
        return []
    answers = []
    for model in dict.fromkeys(rows["model"]):
        part = rows[rows["model"] == model].set_index("gender")
        if not {"female", "male"} <= set(part.index):
            continue
        estimates = [Estimate(f"{quantity} {label}", float(part.loc[gender, "mean"]),
                              _number(part.loc[gender, "ci_low"]), _number(part.loc[gender, "ci_high"]),
                              source=f"{source} ({model}, {gender})")
                     for gender, label in (("female", "women"), ("male", "men"))]
        outcome = direction(estimates[0], estimates[1])
        text = {HOLDS: f"{quantity}: women higher (CIs apart)", REVERSED: f"{quantity}: men higher (CIs apart)",
                UNCLEAR: f"{quantity}: no clear difference (CIs overlap)"}[outcome]
        answers.append(Answer("gender", model, tuple(estimates), NO_VERDICT, text, outcome))
    return answers


def person_answers(nose: Mapping[str, tuple[float, int]], drops: Mapping[str, Mapping[str, tuple[float, int]]],
                   threshold: float | None, baseline: str = "random_uniform") -> list[Answer]:
    """The paper's nose and occlusion figures applied to one person, per model, on plain means (no CI).

    nose: {model: (mean nose share of the person's photos, photos)}; drops: {model: {"leam": (mean drop,
    photos), baseline: (mean drop, photos)}} (source = target). With so few photos there is no CI: the
    direction compares means, which the reason says.
    """
    answers = []
    for model, (share, count) in nose.items():
        if _number(share) is None:
            continue
        estimate = Estimate("nose share", float(share), paper=PAPER_FIGURES["nose share"],
                            source="data/variability/shares_per_identity.csv")
        answer = _judge("person.nose", model, [estimate], None, threshold)
        answers.append(replace(answer, reason=answer.reason.replace("no CI for nose share",
                                                                    f"mean of {count} photos, no CI")))
    for model, kinds in drops.items():
        if "leam" not in kinds or baseline not in kinds:
            continue
        (leam, count), (rand, _) = kinds["leam"], kinds[baseline]
        if _number(leam) is None or _number(rand) is None:
            continue
        estimates = [Estimate("LEAM drop", float(leam), paper=PAPER_FIGURES["LEAM drop"],
                              source="data/occlusion/drops.csv"),
                     Estimate(f"{baseline} drop", float(rand), paper=PAPER_FIGURES["random drop"],
                              source="data/occlusion/drops.csv")]
        answer = _judge("person.occlusion", model, estimates, (0, 1), threshold)
        reason = answer.reason.replace(f"no CI for LEAM drop, {baseline} drop", f"means of {count} photos, no CI")
        answers.append(replace(answer, reason=reason))
    return answers


def explain_answers(explain: Mapping | None, method: str = "leam:overall") -> list[Answer]:
    """Per source model (= target) of ``metrics/explain.json``: the deletion and insertion winners against
    ``method`` (its AUC and rank, the methods a paired test finds better or worse) and whether each curve
    separates ``method`` from its opposing-sign map; no paper figure."""
    if not explain:
        return []
    answers = []
    for model, entry in (explain.get("models") or {}).items():
        for curve in ("deletion", "insertion"):
            block = (entry or {}).get(curve) or {}
            auc = block.get("auc") or {}
            if method not in auc or block.get("winner") not in auc:
                continue
            source = f"metrics/explain.json models.{model}.{curve}.auc"
            estimates = tuple(Estimate(f"{name} AUC", float(auc[name]["mean"]), *_ci(auc[name].get("ci")), source=source)
                              for name in dict.fromkeys([method, block["winner"]]))
            better, worse = block.get("beats_leam") or [], block.get("loses_to_leam") or []
            reason = (f"{method} ranks {block.get('leam_rank')} of {block.get('methods')}; better than it (p < 0.05): "
                      f"{', '.join(better) or 'none'}; worse: {', '.join(worse) or 'none'}")
            answers.append(Answer(f"explain.{curve}", model, estimates, NO_VERDICT, reason,
                                  extra={"winner": block["winner"], "better": better, "worse": worse}))
        signs = {curve: ((entry or {}).get(curve) or {}).get("signs", {}).get(method) for curve in ("deletion", "insertion")}
        if signs["deletion"] is None or signs["insertion"] is None:
            continue
        source = f"metrics/explain.json models.{model}.deletion.signs.{method}"
        estimates = (Estimate("deletion AUC supports", float(signs["deletion"]["supports_auc"]), source=source),
                     Estimate("opposes", float(signs["deletion"]["opposes_auc"]), source=source))
        reason = "; ".join(f"{curve} {'separates' if s['separates'] else 'does not separate'} the signs "
                           f"(p = {float(s['p_value']):.2g})" for curve, s in signs.items())
        answers.append(Answer("explain.signs", model, estimates, NO_VERDICT, reason,
                              extra={curve: bool(s["separates"]) for curve, s in signs.items()}))
    return answers


PROTECT_ROLES = {"held_out": "held-out networks", "sources": "source networks"}
"""The pooled roles of ``metrics/protect.json``, held-out first: the networks the optimiser never saw."""

_PROTECT_PLACES = {"random_face": "random face pixels", "random_blob": "a random disc",
                   "sparse": "sparse top-gradient pixels"}
_PROTECT_FILLS = {"optimised": "the optimised perturbation", "black": "black pixels", "noise": "random noise",
                  "blur": "a blur"}


def protect_label(fill: str, location: str, question: str) -> str:
    """How the report names a protect condition: by its fill for ``what``, else by its location
    ('own LEAM map (overall)', 'person-level map (overall)', 'random face pixels', ...)."""
    if question == "what":
        return _PROTECT_FILLS.get(fill, fill)
    kind, _, layer = location.partition(":")
    if kind == "leam":
        return f"own LEAM map ({layer})"
    if kind == "person":
        return f"person-level map ({layer})"
    return _PROTECT_PLACES.get(location, location)


def _protect_subject(document: Mapping, question: str) -> str | None:
    """The condition a question is about: the photo's own LEAM map, optimised (the ``what`` question's optimised
    entry), or for ``person`` the person-level map."""
    if question == "person":
        return next((n for n, e in (document.get("person") or {}).items()
                     if str(e.get("location", "")).startswith("person:")), None)
    own = next((n for n, e in (document.get("what") or {}).items() if e.get("fill") == "optimised"), None)
    return own if own is not None else next(iter(document.get(question) or {}), None)


def protect_answers(protect: Mapping | None, measure: str = "verification_success") -> list[Answer]:
    """The paper's three open questions from ``metrics/protect.json``, per question (``where``, ``what``,
    ``person``) and pooled role (held-out networks, then sources): the subject condition (the photo's own LEAM
    map, optimised; for ``person`` the person-level map) against every other condition of the question, on
    ``measure`` (default: the share of the person's other photos no longer verified at FAR ``far``).

    Each answer's ``extra["sentence"]`` says in words which condition has the highest mean, which the subject
    beats or loses to with 95% CIs apart and where the CIs overlap, beside the clean photos' rate; no paper
    figure (the paper asks these questions and answers none).
    """
    if not protect:
        return []
    answers = []
    for question in ("where", "what", "person"):
        entries = protect.get(question) or {}
        subject = _protect_subject(protect, question)
        if subject not in entries:
            continue
        order = [subject, *(name for name in entries if name != subject)]
        for role, role_text in PROTECT_ROLES.items():
            estimates = []
            for name in order:
                value = (entries[name].get(role) or {}).get(measure) or {}
                if _number(value.get("mean")) is None:
                    if name == subject:
                        break
                    continue
                label = protect_label(str(entries[name].get("fill", "")), str(entries[name].get("location", name)),
                                      question)
                estimates.append(Estimate(label, float(value["mean"]), *_ci(value.get("ci")),
                                          source=f"metrics/protect.json {question}.{name}.{role}.{measure}"))
            if len(estimates) >= 2:
                answers.append(_protect_answer(question, role, role_text, estimates, protect, measure))
    return answers


def _protect_answer(question: str, role: str, role_text: str, estimates: list[Estimate], protect: Mapping,
                    measure: str) -> Answer:
    """One question on one pooled role: the subject (``estimates[0]``) against the others, in words."""
    first, others = estimates[0], estimates[1:]
    outcomes = {e.quantity: direction(first, e) for e in others}
    above, below, overlap = ([q for q, o in outcomes.items() if o == outcome] for outcome in (HOLDS, REVERSED, UNCLEAR))
    top = max(e.mean for e in estimates)
    best = [e for e in estimates if math.isclose(e.mean, top, rel_tol=1e-9, abs_tol=1e-12)]
    rivals = [e.quantity for e in estimates if e is not best[0] and direction(best[0], e) != HOLDS]
    if len(best) == 1 and not rivals:
        parts = [f"{best[0].quantity} wins: its CI lies above every other's"]
    else:
        highest = (f"the highest mean is {best[0].quantity} ({top:.3f})" if len(best) == 1 else
                   f"the highest mean ({top:.3f}) is shared by {', '.join(e.quantity for e in best)}")
        parts = [f"no clear winner: {highest}"
                 + (f", whose CI overlaps those of {', '.join(rivals)}" if len(best) == 1 else "")]
    if len(best) == 1 and best[0] is first:
        parts += [f"it beats {', '.join(above)} with CIs apart"] if above and rivals else []
    else:
        parts += [f"{first.quantity} beats {', '.join(above)} with CIs apart"] if above else []
        parts += [f"{first.quantity} loses to {', '.join(below)} with CIs apart"] if below else []
        parts += [f"the CI of {first.quantity} overlaps those of {', '.join(overlap)}"] if overlap else []
    reason = "; ".join(parts)
    networks = ", ".join(protect.get(role) or [])
    clean = _number(((protect.get("clean") or {}).get(role) or {}).get(measure))
    far = _number(protect.get("far"))
    what = measure.replace("_", " ") + (f" at FAR {far:g}" if far is not None and measure.startswith("verif") else "")
    sentence = (f"On the {role_text} ({networks}), {what} over {protect.get('n_photos', '?')} photos: "
                + "; ".join(f"{e.quantity} {e.text(3)}" for e in estimates)
                + (f" (clean photos {clean:.3f})" if clean is not None else "") + f". {reason[0].upper()}{reason[1:]}.")
    return Answer(f"protect.{question}", f"{role_text} ({networks})" if networks else role_text, tuple(estimates),
                  NO_VERDICT, reason, extra={"question": question, "role": role, "sentence": sentence,
                                             "best": [e.quantity for e in best], "beats": above, "loses_to": below,
                                             "overlaps": overlap, "clean": clean})


def all_answers(correlation: Mapping | None = None, similarity: Mapping | None = None,
                occlusion: Mapping | None = None, variability: Mapping | None = None,
                region_ci: Mapping[str, tuple[float, float]] | None = None, occlusion_summary=None
                ) -> list[Answer]:
    """Every answer of the report, paper claims first (in :data:`PAPER` order), then our checks."""
    return [*region_answers(correlation, region_ci), *similarity_answers(similarity),
            *occlusion_answers(occlusion), *transfer_answers(occlusion, occlusion_summary),
            *emd_answers(similarity), *variability_answers(variability), *gender_answers(variability)]
