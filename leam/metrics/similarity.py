"""Same- vs different-identity similarity of LEAM distributions (Bhattacharyya coefficient, exact EMD).

Question (paper, section on person-specific patterns): are the maps of two photos of the same person more
alike than the maps of two different people? Maps become distributions in ``leam.metrics.distributions``;
here they are compared pairwise:

- Bhattacharyya coefficient BC(p, q) = sum_k sqrt(p_k q_k), in [0, 1]: 1 for identical distributions, 0 for
  disjoint supports. All pairs at once are one matrix product sqrt(P) @ sqrt(Q)^T.
- Earth Mover's Distance with POT's exact network simplex (the solver of ``ot.emd2``); the cost is the
  Euclidean distance between cell centres in analysis-frame pixels, so EMD is "how many frame pixels the
  relevance must move on average". Top-t maps (t < 1) are compared on the stored map grid itself, exactly:
  only their non-zero cells enter the solver (:func:`emd_pair`); full maps (t = 1) are pooled to
  ``similarity.emd_grid`` cells first (:func:`emd_grid`). A pair whose solver does not reach optimality
  raises, never returns a number.

Pairs: every same-identity pair, and for each identity a seeded sample of different-identity pairs (one
image of that identity, one of another) of ``different_per_same`` times its number of same pairs, so both
groups weight identities alike.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import pandas as pd
from ot.lp.emd_wrap import check_result, emd_c
from tqdm import tqdm

from leam.errors import LeamError
from leam.metrics.distributions import GROUND_METRIC, Distributions, cell_centres, cell_size, maps_to_distributions
from leam.metrics.stats import compare_groups, summarize
from leam.topt import effective_thresholds

if TYPE_CHECKING:  # the params group is only an annotation here
    from leam.config import SimilarityParams

__all__ = ["DIFFERENT", "PAPER_BC_RANGES", "SAME", "EMDConvergenceError", "ModelSimilarity", "SurplusTransport",
           "bhattacharyya_matrix", "bhattacharyya_pairs", "build_pairs", "emd_grid", "emd_pair", "emd_pair_subset",
           "emd_pairs", "gender_group", "headline", "metrics_document", "model_similarity", "same_identity_pairs",
           "sample_different_pairs", "score_model", "similarity_tables", "summary_tables", "surplus_transport"]

log = logging.getLogger(__name__)

PAPER_BC_RANGES = {"same": (0.32, 0.57), "different": (0.04, 0.13)}
"""Ranges of mean BC across layers reported in the paper, for the report to print beside ours."""

SAME, DIFFERENT = "same", "different"


class EMDConvergenceError(LeamError):
    """The network simplex stopped before optimality (raise ``similarity.emd_max_iter``)."""


# --------------------------------------------------------------------------------------------- BC
def bhattacharyya_matrix(first: np.ndarray, second: np.ndarray | None = None, dtype=np.float64) -> np.ndarray:
    """All-pairs BC (N, M) of distributions ``first`` (N, K) and ``second`` (M, K) (default: ``first``).

    ``dtype=np.float32`` halves memory and time for fine grids (K = 112 x 112) at ~1e-6 relative error.
    """
    root_first = np.sqrt(np.asarray(first, dtype=dtype))
    root_second = root_first if second is None else np.sqrt(np.asarray(second, dtype=dtype))
    return np.clip(root_first @ root_second.T, 0.0, 1.0)


BC_MATRIX_MAX_WASTE = 256.0
""":func:`bhattacharyya_pairs` takes the all-pairs matrix while it has at most this many entries per wanted pair
(N * N <= 256 * P): on the stored 112 x 112 grid one BLAS entry cost 140 to 340 times less than one gathered
pair's dot product at 844 to 4,000 photos here (``benchmarks/similarity.py``)."""


def bhattacharyya_pairs(probs: np.ndarray, a: np.ndarray, b: np.ndarray,
                        matrix_max_waste: float = BC_MATRIX_MAX_WASTE, chunk: int = 1024) -> np.ndarray:
    """BC (P,) float64 of the pairs ``(a[i], b[i])`` of distributions ``probs`` (N, K), in float32 arithmetic.

    Few photos: the rows of :func:`bhattacharyya_matrix` (float32), fastest while N * N <= ``matrix_max_waste`` x P
    (the default run: 844 photos, 20,858 pairs a network). Many photos: each pair's own dot product, ``chunk``
    pairs at a time, so time and memory grow with the pairs, not with N squared (at the paper's 20,000 photos
    and 380,000 pairs the matrix would be 1.6 GB and 1000 times the entries, about 3 times the time of the
    dot products). Both agree to float32 rounding.
    """
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise LeamError(f"pair indices must be two (P,) arrays, got {a.shape} and {b.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.float64)
    n = probs.shape[0]
    if n * n <= matrix_max_waste * a.size:
        return bhattacharyya_matrix(probs, dtype=np.float32)[a, b].astype(np.float64)
    roots = np.sqrt(np.asarray(probs, dtype=np.float32))
    out = np.empty(a.size, dtype=np.float64)
    for start in range(0, a.size, chunk):
        part = slice(start, start + chunk)
        out[part] = np.clip(np.einsum("pk,pk->p", roots[a[part]], roots[b[part]]), 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------- EMD
class SurplusTransport(NamedTuple):
    """The transport problem :func:`emd_pair` solves (:func:`surplus_transport`)."""

    sources: np.ndarray  # (n,) cells where the first distribution has the surplus
    sinks: np.ndarray    # (m,) cells where the second has it
    a: np.ndarray        # (n,) their surplus masses, summing to 1
    b: np.ndarray        # (m,) the same total as ``a`` to the last bit
    cost: np.ndarray     # (n, m) distances between their centres (px)
    moved: float         # the mass that moves: EMD = moved x the optimal cost of (a, b, cost)


def surplus_transport(first: np.ndarray, second: np.ndarray, centres: np.ndarray) -> SurplusTransport | None:
    """The reduced problem of two distributions (K,) over cells at ``centres`` (K, 2): shared mass stays in its
    cell, the surplus of each side moves (see :func:`emd_pair`); None when nothing moves."""
    if not (first > 0).any() or not (second > 0).any():
        raise LeamError("EMD of an empty distribution; excluded maps must be dropped before pairing")
    first, second = first / first.sum(), second / second.sum()
    shared = np.minimum(first, second)
    rows, cols = np.flatnonzero(first > shared), np.flatnonzero(second > shared)
    if rows.size == 0 or cols.size == 0:
        return None
    a, b = first[rows] - shared[rows], second[cols] - shared[cols]
    moved = float(a.sum())  # the mass that moves, 1 - sum(shared) up to rounding
    a = a / moved
    b = b * (a.sum() / b.sum())  # the same total as a, to the last bit (the solver needs balanced masses)
    cost = np.sqrt(((centres[rows, None, :] - centres[None, cols, :]) ** 2).sum(axis=-1))
    return SurplusTransport(rows, cols, a, b, cost, moved)


def emd_pair(first: np.ndarray, second: np.ndarray, centres: np.ndarray, max_iter: int = 1_000_000) -> float:
    """Exact EMD between two distributions (K,) over cells at ``centres`` (K, 2) (analysis-frame pixels).

    The transport problem is solved on the support only, which is exact: cells without mass carry no flow.
    The mass two maps share in a cell stays there first (``min(p, q)``), which is exact for a metric
    ground cost such as the Euclidean distance (moving shared mass away and back can never be cheaper, by
    the triangle inequality), so the solver sees the cells where ``first`` has the surplus as sources and
    those where ``second`` has it as sinks, with the cost matrix of their centres' distances only (sources x
    sinks; never the K x K matrix, 1.3 GB at K = 112 x 112). The solver is POT's network simplex, the one
    behind ``ot.emd2``, called directly (``ot.lp.emd_wrap.emd_c``: the wrapper's checks cost about a third
    of the time of a 90 x 90 problem); ``tests/test_similarity.py`` holds it equal to ``ot.emd2`` on the
    dense problem. Raises EMDConvergenceError when POT reports anything but an optimal solution.
    """
    problem = surplus_transport(first, second, centres)
    if problem is None:  # identical distributions (up to rounding): nothing moves
        return 0.0
    _plan, value, _u, _v, code = emd_c(problem.a, problem.b, problem.cost, max_iter, 1, None, None)
    if code != 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # check_result also warns what it returns
            reason = check_result(code)
        raise EMDConvergenceError(f"exact EMD did not converge ({reason}, result code {code}) with "
                                  f"numItermax={max_iter}; raise similarity.emd_max_iter")
    return float(value) * problem.moved


_WORKER_STATE: dict = {}


def _init_worker(probs: np.ndarray, centres: np.ndarray, max_iter: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_STATE.update(probs=probs, centres=centres, max_iter=max_iter)


def _emd_chunk(pairs: np.ndarray) -> np.ndarray:
    probs, centres, max_iter = _WORKER_STATE["probs"], _WORKER_STATE["centres"], _WORKER_STATE["max_iter"]
    return np.array([emd_pair(probs[i], probs[j], centres, max_iter) for i, j in pairs], dtype=np.float64)


def _worker_context():
    """forkserver, not fork: forking a process whose torch/OpenMP threads hold locks can deadlock the
    workers. The server imports this module (POT, numpy; POT pulls in torch) once, so each worker starts
    as a cheap fork of an idle, already-initialised process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def emd_pairs(probs: np.ndarray, pairs: np.ndarray, centres: np.ndarray, workers: int = 1,
              max_iter: int = 1_000_000, chunk: int = 256, progress: bool = False) -> np.ndarray:
    """Exact EMD (P,) for index pairs (P, 2) into ``probs`` (N, K) over cells at ``centres`` (K, 2),
    spread over ``workers`` processes (:func:`emd_pair` each)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    chunks = [pairs[start:start + chunk] for start in range(0, pairs.shape[0], chunk)]
    bar = tqdm(total=pairs.shape[0], desc="EMD pairs", unit="pair", disable=not progress)
    results = []
    if workers <= 1 or len(chunks) == 1:
        _init_worker(probs, centres, max_iter)
        try:
            for part in chunks:
                results.append(_emd_chunk(part))
                bar.update(part.shape[0])
        finally:
            _WORKER_STATE.clear()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(probs, centres, max_iter),
                                 mp_context=_worker_context()) as pool:
            for part, values in zip(chunks, pool.map(_emd_chunk, chunks)):
                results.append(values)
                bar.update(part.shape[0])
    bar.close()
    return np.concatenate(results)


# ------------------------------------------------------------------------------------------- pairs
def same_identity_pairs(identities) -> np.ndarray:
    """All unordered pairs (i < j) of rows with equal identity, (P, 2) int64 sorted by (i, j)."""
    identities = np.asarray(identities)
    upper_i, upper_j = np.triu_indices(identities.size, k=1)
    keep = identities[upper_i] == identities[upper_j]
    return np.stack([upper_i[keep], upper_j[keep]], axis=1).astype(np.int64)


def sample_different_pairs(identities, per_same: float, seed: int) -> np.ndarray:
    """Seeded different-identity pairs (P, 2) with i < j, size-matched to the same-identity pairs per identity.

    For identity a with n_a images, round(per_same * n_a (n_a - 1) / 2) pairs are drawn with one image of a
    and one uniformly chosen image of any other identity, without repeating a pair. The same seed gives
    the same pairs.
    """
    identities = np.asarray(identities)
    names, codes = np.unique(identities, return_inverse=True)
    total = identities.size
    rng = np.random.default_rng(seed)
    taken: set[int] = set()
    out = []
    for code in range(names.size):
        members = np.flatnonzero(codes == code)
        others = np.flatnonzero(codes != code)
        wanted = int(round(per_same * members.size * (members.size - 1) / 2))
        wanted = min(wanted, members.size * others.size)
        picked: list[tuple[int, int]] = []
        while len(picked) < wanted:
            draw = 2 * (wanted - len(picked)) + 8
            first = rng.choice(members, size=draw)
            second = rng.choice(others, size=draw)
            for i, j in zip(np.minimum(first, second), np.maximum(first, second)):
                key = int(i) * total + int(j)
                if key not in taken:
                    taken.add(key)
                    picked.append((int(i), int(j)))
                    if len(picked) == wanted:
                        break
        out.extend(picked)
    pairs = np.array(out, dtype=np.int64).reshape(-1, 2)
    return pairs


def gender_group(gender_a, gender_b, same_identity) -> np.ndarray:
    """Gender group of each pair.

    Same-identity pairs: the person's gender (``female``/``male``/``unknown``). Different-identity pairs:
    ``female-female``, ``male-male``, ``mixed``, or ``unknown`` when either gender is unknown.
    """
    gender_a = np.asarray(gender_a, dtype=object)
    gender_b = np.asarray(gender_b, dtype=object)
    known = np.isin(gender_a, ["female", "male"]) & np.isin(gender_b, ["female", "male"])
    different = np.where(gender_a == gender_b, np.char.add(gender_a.astype(str), "-" + gender_b.astype(str)), "mixed")
    different = np.where(known, different, "unknown")
    same = np.where(np.isin(gender_a, ["female", "male"]), gender_a, "unknown")
    return np.where(np.asarray(same_identity, dtype=bool), same, different).astype(object)


def build_pairs(meta: pd.DataFrame, per_same: float, seed: int) -> pd.DataFrame:
    """The pair table for one model: ``a, b`` (rows of meta), image ids, identities, type, gender group."""
    identities = meta["identity"].to_numpy()
    same = same_identity_pairs(identities)
    different = sample_different_pairs(identities, per_same, seed)
    pairs = np.concatenate([same, different])
    gender = meta["gender"].fillna("unknown").astype(str).to_numpy()
    frame = pd.DataFrame({
        "pair_id": np.arange(pairs.shape[0]),
        "pair_type": [SAME] * len(same) + [DIFFERENT] * len(different),
        "a": pairs[:, 0], "b": pairs[:, 1],
        "image_a": meta["image_id"].to_numpy()[pairs[:, 0]], "image_b": meta["image_id"].to_numpy()[pairs[:, 1]],
        "identity_a": identities[pairs[:, 0]], "identity_b": identities[pairs[:, 1]],
    })
    frame["gender_group"] = gender_group(gender[pairs[:, 0]], gender[pairs[:, 1]], frame.pair_type == SAME)
    return frame


# ------------------------------------------------------------------------------------------ tables
def _gender_of_group(group: str) -> str:
    """Gender stratum a pair group belongs to, to compare same vs different within one gender."""
    return {"female-female": "female", "male-male": "male"}.get(group, group)


def summary_tables(scores: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Summaries and tests of long scores (model, layer, threshold, metric, pair_type, gender_group, value).

    Returns ``summary`` (per model/layer/threshold/metric/pair_type: n, mean, std, 95% bootstrap CI),
    ``by_gender`` (the same, split by gender group) and ``tests`` (same vs different: Mann-Whitney p,
    rank-biserial and Cohen's d, for all pairs and within each gender, where female same-identity pairs
    meet female-female different pairs; ``same_more_similar`` says whether the CIs separate in the
    direction "same is more similar": higher BC, lower EMD).
    """
    keys = ["model", "layer", "threshold", "metric"]
    summary = summarize(scores, [*keys, "pair_type"], "value", n_boot=n_boot, seed=seed)
    by_gender = summarize(scores, [*keys, "pair_type", "gender_group"], "value", n_boot=n_boot, seed=seed)
    intervals = {(*row[:4], row.pair_type, "all"): (row.ci_low, row.ci_high)
                 for row in summary[[*keys, "pair_type", "ci_low", "ci_high"]].itertuples(index=False)}
    intervals.update({(*row[:4], row.pair_type, _gender_of_group(row.gender_group)): (row.ci_low, row.ci_high)
                      for row in by_gender[[*keys, "pair_type", "gender_group", "ci_low", "ci_high"]]
                      .itertuples(index=False) if row.gender_group != "mixed"})
    strata = scores.assign(gender=scores["gender_group"].map(_gender_of_group))
    rows = []
    for stratum_name, stratum in [("all", strata), *[(g, part) for g, part in strata.groupby("gender")
                                                      if g in ("female", "male")]]:
        for key, group in stratum.groupby(keys, sort=True):
            same = group.loc[group.pair_type == SAME, "value"].to_numpy()
            different = group.loc[group.pair_type == DIFFERENT, "value"].to_numpy()
            same_ci = intervals.get((*key, SAME, stratum_name), (np.nan, np.nan))
            different_ci = intervals.get((*key, DIFFERENT, stratum_name), (np.nan, np.nan))
            if key[3] == "bc":  # more similar = higher BC
                separated = same_ci[0] > different_ci[1]
            else:  # more similar = lower EMD
                separated = same_ci[1] < different_ci[0]
            rows.append({**dict(zip(keys, key)), "gender": stratum_name,
                         "n_same": int(np.isfinite(same).sum()), "n_different": int(np.isfinite(different).sum()),
                         **compare_groups(same, different), "same_more_similar": bool(separated)})
    return summary, by_gender, pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ one model
def emd_grid(fraction: float, store_size: int, full_grid: int) -> int:
    """Cells a side on which EMD is solved for top-``fraction`` maps: the stored map grid (``store_size``)
    for top-t maps (t < 1: their few non-zero cells make the exact problem cheap, 125 x 125 at most at the
    default 1% of 112 x 112), ``full_grid`` (``similarity.emd_grid``) for full maps (t = 1: all 12,544
    cells would make a 12,544 x 12,544 problem, about 40 s a pair)."""
    return int(store_size) if fraction < 1.0 else int(full_grid)


def emd_pair_subset(same: np.ndarray, max_pairs: int, seed: int) -> np.ndarray:
    """(P,) bool: the pairs that get EMD, at most ``max_pairs`` (0 = all), drawn without replacement and seeded,
    same- and different-identity pairs in their proportions (each kind keeps round(share x max_pairs))."""
    keep = np.ones(len(same), dtype=bool)
    if not max_pairs or len(same) <= max_pairs:
        return keep
    keep[:] = False
    rng = np.random.default_rng([seed, 7])
    for kind in (True, False):
        members = np.flatnonzero(same == kind)
        take = min(len(members), int(round(max_pairs * len(members) / len(same))))
        keep[rng.choice(members, size=take, replace=False)] = True
    return keep


def score_model(maps: np.ndarray, layers: dict, meta: pd.DataFrame, cfg: SimilarityParams, threshold: float,
                seed: int, frame_size: int, face_mask: np.ndarray | None = None, progress: bool = True
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Pairs, long scores, exclusions and timings (s) of one model's LEAM maps.

    maps: (N, L, G, G) stored maps with ``layers`` its layers.json and ``meta`` its meta.csv (row i = map i);
    cfg: the ``similarity`` params group (``leam.config.SimilarityParams``); threshold: the top-level
    fraction (a BC variant, and always one of EMD's); seed: the pair sampling; frame_size: analysis-frame
    pixels, the unit of EMD's ground cost; face_mask: (N, G, G) bool face region, or None.
    Returns the pair table (``build_pairs``), scores (layer, threshold, metric, pair_id, value), one
    exclusions row per layer and threshold (maps without mass, pairs dropped with them) and timings.
    """
    store_size = maps.shape[-1]
    bc_grid = cfg.bc_grid or store_size
    policy = cfg.negative_policy
    names = list(layers["layers"])
    emd_layers = list(cfg.emd_layers)
    unknown = [name for name in emd_layers if name not in names]
    if unknown:
        raise LeamError(f"similarity.emd_layers {unknown} not among this model's layers: {', '.join(names)}")
    emd_thresholds = {threshold} | set(cfg.emd_thresholds)
    workers = cfg.workers
    max_iter = cfg.emd_max_iter
    thresholds = effective_thresholds(cfg.thresholds, threshold, "similarity.thresholds")

    pairs = build_pairs(meta, cfg.different_per_same, seed)
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    pair_ids = pairs["pair_id"].to_numpy()
    emd_subset = emd_pair_subset((pairs["pair_type"] == SAME).to_numpy(), cfg.emd_max_pairs, seed)
    scores, exclusions, timings = [], [], {"maps_s": 0.0, "bc_s": 0.0, "emd_s": 0.0, "emd_pairs": 0}

    def timed_emd(*args, **kwargs) -> np.ndarray:
        start = time.perf_counter()
        values = emd_pairs(*args, **kwargs)
        timings["emd_s"] += time.perf_counter() - start
        return values

    # EMD runs first, in the background: its worker processes solve while this process computes every BC
    # (one core's numpy work), instead of one after the other. Outputs are the same, in the same order.
    emd_jobs: dict[tuple[str, float], tuple[int, Distributions, np.ndarray, Future]] = {}
    with ThreadPoolExecutor(max_workers=1) as background:
        for layer_index, layer in enumerate(names):
            for fraction in thresholds:
                if layer not in emd_layers or not any(np.isclose(fraction, t) for t in emd_thresholds):
                    continue
                start = time.perf_counter()
                grid = emd_grid(fraction, store_size, cfg.emd_grid)
                dist = maps_to_distributions(np.asarray(maps[:, layer_index], dtype=np.float32), grid, policy,
                                             fraction, face_mask)
                timings["maps_s"] += time.perf_counter() - start
                keep = dist.valid[a] & dist.valid[b] & emd_subset
                timings["emd_pairs"] += int(keep.sum())
                emd_jobs[layer, fraction] = (grid, dist, keep, background.submit(
                    timed_emd, dist.probs, np.stack([a[keep], b[keep]], axis=1), cell_centres(grid, frame_size),
                    workers=workers, max_iter=max_iter, progress=progress))
        for layer_index, layer in enumerate(names):
            layer_maps = np.asarray(maps[:, layer_index], dtype=np.float32)
            for fraction in thresholds:
                job = emd_jobs.get((layer, fraction))
                start = time.perf_counter()
                dist_bc = (job[1] if job is not None and job[0] == bc_grid
                           else maps_to_distributions(layer_maps, bc_grid, policy, fraction, face_mask))
                timings["maps_s"] += time.perf_counter() - start
                keep = dist_bc.valid[a] & dist_bc.valid[b]
                exclusions.append({"layer": layer, "threshold": fraction, "maps_excluded": dist_bc.n_excluded,
                                   "pairs_dropped": int((~keep).sum())})
                start = time.perf_counter()
                bc = bhattacharyya_pairs(dist_bc.probs, a[keep], b[keep])
                timings["bc_s"] += time.perf_counter() - start
                scores.append(pd.DataFrame({"layer": layer, "threshold": fraction, "metric": "bc",
                                            "pair_id": pair_ids[keep], "value": bc}))
                if job is not None:
                    scores.append((layer, fraction))  # filled in below, once its EMD is done
        for index, item in enumerate(scores):
            if isinstance(item, tuple):
                _grid, _dist, keep, future = emd_jobs[item]
                scores[index] = pd.DataFrame({"layer": item[0], "threshold": item[1], "metric": "emd",
                                              "pair_id": pair_ids[keep], "value": future.result()})
    return pairs, pd.concat(scores, ignore_index=True), pd.DataFrame(exclusions), timings


def headline(summary: pd.DataFrame, tests: pd.DataFrame, model: str, threshold: float) -> dict:
    """metrics/similarity.json entries of one model: per layer, BC and EMD at ``threshold`` and of the full
    maps (same and different means with CIs, the test, and for BC whether the means fall in the paper's ranges)."""
    out: dict = {}
    summary = summary[summary.model == model]
    tests = tests[(tests.model == model) & (tests.gender == "all")]
    for layer in summary.layer.unique():
        entry = {}
        for metric in ("bc", "emd"):
            for name, fraction in ((f"{metric}_top", threshold), (f"{metric}_full", 1.0)):
                rows = summary[(summary.layer == layer) & (summary.metric == metric)
                               & np.isclose(summary.threshold, fraction)].set_index("pair_type")
                test = tests[(tests.layer == layer) & (tests.metric == metric) & np.isclose(tests.threshold, fraction)]
                if rows.empty or test.empty:
                    continue
                test = test.iloc[0]
                entry[name] = {
                    "same_mean": rows.loc[SAME, "mean"], "same_ci": [rows.loc[SAME, "ci_low"], rows.loc[SAME, "ci_high"]],
                    "different_mean": rows.loc[DIFFERENT, "mean"],
                    "different_ci": [rows.loc[DIFFERENT, "ci_low"], rows.loc[DIFFERENT, "ci_high"]],
                    "p_value": test.p_value, "rank_biserial": test.rank_biserial, "cohens_d": test.cohens_d,
                    "same_more_similar": bool(test.same_more_similar)}
                if metric == "bc":  # where our means fall relative to the paper's ranges across layers
                    entry[name].update({f"{kind}_in_paper_range": bool(low <= entry[name][f"{kind}_mean"] <= high)
                                        for kind, (low, high) in PAPER_BC_RANGES.items()})
        out[layer] = entry
    return out


# --------------------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class ModelSimilarity:
    """One model's :func:`score_model` tables, each with a ``model`` column, and its map and pair counts.

    pairs: the pair table without the row columns ``a, b``; scores: layer, threshold, metric, pair_id,
    value; exclusions: one row per layer and threshold; counts: n_maps, n_same_pairs, n_different_pairs.
    """

    model: str
    pairs: pd.DataFrame
    scores: pd.DataFrame
    exclusions: pd.DataFrame
    counts: dict[str, int]


def model_similarity(model: str, maps: np.ndarray, layers: dict, meta: pd.DataFrame, cfg: SimilarityParams,
                     threshold: float, seed: int, frame_size: int, face_mask: np.ndarray | None = None,
                     progress: bool = True) -> ModelSimilarity:
    """:func:`score_model` of one named model (same arguments), tagged with its name; logs the timings."""
    pairs, scores, exclusions, timings = score_model(maps, layers, meta, cfg, threshold, seed, frame_size,
                                                     face_mask, progress=progress)
    log.info("%s: maps -> distributions %.1f s, BC %.2f s, EMD %.1f s for %d pairs (%.0f pairs/s)", model,
             timings["maps_s"], timings["bc_s"], timings["emd_s"], timings["emd_pairs"],
             timings["emd_pairs"] / max(timings["emd_s"], 1e-9))
    counts = {"n_maps": int(len(meta)), "n_same_pairs": int((pairs.pair_type == SAME).sum()),
              "n_different_pairs": int((pairs.pair_type == DIFFERENT).sum())}
    return ModelSimilarity(model, pairs.drop(columns=["a", "b"]).assign(model=model), scores.assign(model=model),
                           exclusions.assign(model=model), counts)


def similarity_tables(results: Sequence[ModelSimilarity], n_boot: int, seed: int) -> dict[str, pd.DataFrame]:
    """The ``similarity`` stage's tables by file stem: pairs, scores (values rounded to 6 places), summary,
    by_gender, tests (:func:`summary_tables` over every model) and exclusions, ``model`` first."""
    pairs = pd.concat([result.pairs for result in results], ignore_index=True)
    scores = pd.concat([result.scores for result in results], ignore_index=True)
    labelled = scores.merge(pairs[["model", "pair_id", "pair_type", "gender_group"]], on=["model", "pair_id"])
    summary, by_gender, tests = summary_tables(labelled, n_boot=n_boot, seed=seed)
    front = ["model", "pair_id"]
    scores = scores[["model", "layer", "threshold", "metric", "pair_id", "value"]]
    exclusions = pd.concat([result.exclusions for result in results], ignore_index=True)
    return {"pairs": pairs[front + [c for c in pairs.columns if c not in front]],
            "scores": scores.assign(value=scores.value.round(6)), "summary": summary, "by_gender": by_gender,
            "tests": tests,
            "exclusions": exclusions[["model", "layer", "threshold", "maps_excluded", "pairs_dropped"]]}


def metrics_document(results: Sequence[ModelSimilarity], summary: pd.DataFrame, tests: pd.DataFrame,
                     cfg: SimilarityParams, threshold: float, frame_size: int, store_size: int) -> dict:
    """metrics/similarity.json: the recipe (grids, ground metric in ``frame_size`` pixels, pairing, EMD
    layers and thresholds, and per EMD threshold the grid it was solved on, :func:`emd_grid` of
    ``store_size``), the paper's BC ranges and per model its counts and :func:`headline`."""
    models = {result.model: {**result.counts, "layers": headline(summary, tests, result.model, threshold)}
              for result in results}
    emd_thresholds = sorted({threshold} | set(cfg.emd_thresholds))
    emd_grids = {}
    for fraction in emd_thresholds:
        grid = emd_grid(fraction, store_size, cfg.emd_grid)
        emd_grids[f"{fraction:g}"] = {
            "grid": grid, "cell_size_px": cell_size(frame_size, grid),
            "method": ("exact: the two maps' support on the stored map grid" if grid == store_size and fraction < 1
                       else "full maps pooled to similarity.emd_grid, exact on the pooled cells")}
    return {
        "emd_grid": cfg.emd_grid, "emd_grids": emd_grids, "frame_size": frame_size,
        "bc_grid": cfg.bc_grid or "stored map grid (leam.store_size)",
        "ground_metric": GROUND_METRIC, "negative_policy": cfg.negative_policy,
        "face_mask": cfg.face_mask, "threshold": threshold,
        "pairing": f"all same-identity pairs; {cfg.different_per_same} seeded "
                   f"different-identity pairs per same pair, per identity",
        "emd_layers": list(cfg.emd_layers),
        "emd_thresholds": emd_thresholds,
        "paper_bc_ranges": {k: list(v) for k, v in PAPER_BC_RANGES.items()},
        "models": models}
