"""Benchmark: exact top-t EMD on the stored grid against the previous pooled 14 x 14 EMD, on real maps.

For each model with LEAM maps in ``--leam-dir`` (``data/leam/<model>/maps.npy``, the overall map), at the
top-level ``threshold`` of params.yaml (top 1%): the stage's pairs (every same-identity pair and as many
seeded different-identity pairs, ``leam.metrics.similarity.build_pairs``), a seeded sample of ``--pairs`` of
them, and in one run, one process each:

- pooled: the previous recipe, maps pooled to 14 x 14 after top-t selection (16-pixel cells), EMD on the
  pooled cells with the 196 x 196 cost matrix sliced to the two supports (``ot.emd2``), kept here verbatim
  as the baseline;
- exact: ``leam.metrics.similarity.emd_pair`` on the stored 112 x 112 grid (2-pixel cells), only the two
  maps' non-zero cells, shared mass left in place (POT's dense network simplex on sources x sinks);
- sparse (``--sparse``, an alternative that was tried for speed and is not used): the same exact problem on
  POT's sparse network simplex (``emd_c_sparse``) over a few arcs, each source's and sink's ``--neighbours``
  nearest partners plus a 1-D monotone coupling that makes the arc set feasible, certified optimal when no
  arc of the dense problem has a negative reduced cost under the returned duals, and solved again with the
  violating arcs added until it is.

Prints pairs/s of each (solver only, and with the map -> distribution step amortised over the stage's
pairs), the exact-vs-pooled ratio, and how the pooled figures differ from the exact ones: same and
different means (px), their gap, and the per-pair difference. Reads only; writes nothing.

Usage: python benchmarks/emd.py [--pairs 400] [--models dlib_resnet faceres] [--leam-dir data/leam]
                               [--sparse [--neighbours 8]]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import ot
from ot.lp.emd_wrap import emd_c_sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leam.config import load_config  # noqa: E402
from leam.io import read_leam_outputs  # noqa: E402
from leam.metrics.distributions import cell_centres, ground_cost, maps_to_distributions  # noqa: E402
from leam.metrics.similarity import SAME, build_pairs, emd_pair, surplus_transport  # noqa: E402

POOLED_GRID = 14  # the grid every top-t EMD was pooled to before this version (similarity.grid: 14)


def pooled_emd_before(first: np.ndarray, second: np.ndarray, cost: np.ndarray, max_iter: int = 1_000_000) -> float:
    """The previous ``emd_pair``, verbatim in substance: EMD on the pooled cells with mass, the full pooled
    cost matrix sliced to them."""
    rows, cols = np.flatnonzero(first > 0), np.flatnonzero(second > 0)
    a, b = first[rows], second[cols]
    a, b = a / a.sum(), b / b.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value, info = ot.emd2(a, b, cost[np.ix_(rows, cols)], numItermax=max_iter, log=True)
    if int(info.get("result_code", 1)) != 1:
        raise RuntimeError(f"pooled EMD did not converge: {info.get('warning')}")
    return float(value)


def sparse_certified_emd(first: np.ndarray, second: np.ndarray, centres: np.ndarray, neighbours: int,
                         solves: list[int], max_iter: int = 1_000_000) -> float:
    """``emd_pair``'s problem (surplus sources x surplus sinks) on a sparse arc set grown until the dense
    duals certify it: exact, and the number of solves it took appended to ``solves``."""
    problem = surplus_transport(first, second, centres)
    if problem is None:
        solves.append(0)
        return 0.0
    a, b, cost = problem.a, problem.b, problem.cost
    sources, sinks = centres[problem.sources], centres[problem.sinks]
    n, m = cost.shape
    arcs = np.zeros((n, m), dtype=bool)
    k = min(neighbours, m)
    arcs[np.arange(n)[:, None], np.argpartition(cost, k - 1, axis=1)[:, :k]] = True
    k = min(neighbours, n)
    arcs[np.argpartition(cost, k - 1, axis=0)[:k], np.arange(m)[None, :]] = True
    # the 1-D monotone coupling of both sides ordered row-major: a feasible plan, so the arc set is feasible
    by_a, by_b = np.lexsort((sources[:, 1], sources[:, 0])), np.lexsort((sinks[:, 1], sinks[:, 0]))
    cum_a, cum_b = np.cumsum(a[by_a]), np.cumsum(b[by_b])
    ends = np.union1d(cum_a, cum_b)
    middle = (np.concatenate([[0.0], ends[:-1]]) + ends) / 2
    arcs[by_a[np.minimum(np.searchsorted(cum_a, middle), n - 1)],
         by_b[np.minimum(np.searchsorted(cum_b, middle), m - 1)]] = True
    for solve in range(1, 1000):
        s, t = np.nonzero(arcs)
        *_, value, u, v, code = emd_c_sparse(a, b, s.astype(np.uint64), t.astype(np.uint64), cost[s, t], max_iter,
                                              None, None)
        if code != 1:
            raise RuntimeError(f"sparse EMD failed with result code {code}")
        violated = cost - u[:, None] - v[None, :] < -1e-9
        if not violated.any():
            solves.append(solve)
            return float(value) * problem.moved
        arcs |= violated
    raise RuntimeError("sparse EMD was not certified after 999 solves")


def timed(function, pairs: np.ndarray) -> tuple[np.ndarray, float]:
    """Values (P,) of ``function(i, j)`` over index pairs (P, 2) and the seconds they took."""
    start = time.perf_counter()
    values = np.array([function(i, j) for i, j in pairs], dtype=np.float64)
    return values, time.perf_counter() - start


def bench_model(model: str, leam_dir: Path, threshold: float, policy: str, seed: int, n_pairs: int,
                frame_size: int, neighbours: int | None = None) -> dict:
    maps, _layers, meta = read_leam_outputs(leam_dir, model)
    overall = np.asarray(maps[:, -1], dtype=np.float32)
    start = time.perf_counter()
    pooled = maps_to_distributions(overall, POOLED_GRID, policy, threshold)
    pooled_prep = time.perf_counter() - start
    start = time.perf_counter()
    stored = maps_to_distributions(overall, overall.shape[-1], policy, threshold)  # the stage reuses BC's
    stored_prep = time.perf_counter() - start
    pairs = build_pairs(meta, 1.0, seed)
    a, b = pairs.a.to_numpy(), pairs.b.to_numpy()
    pairs = pairs[pooled.valid[a] & pooled.valid[b] & stored.valid[a] & stored.valid[b]]
    stage_pairs = len(pairs)
    sample = pairs.sample(min(n_pairs, stage_pairs), random_state=seed)
    index = sample[["a", "b"]].to_numpy()
    cost, centres = ground_cost(POOLED_GRID, frame_size), cell_centres(overall.shape[-1], frame_size)
    before, before_s = timed(lambda i, j: pooled_emd_before(pooled.probs[i], pooled.probs[j], cost), index)
    exact, exact_s = timed(lambda i, j: emd_pair(stored.probs[i], stored.probs[j], centres), index)
    same = (sample.pair_type == SAME).to_numpy()
    per_pair = {"before": before_s / len(index), "exact": exact_s / len(index)}
    sparse = {}
    if neighbours:
        solves: list[int] = []
        values, seconds = timed(lambda i, j: sparse_certified_emd(stored.probs[i], stored.probs[j], centres,
                                                                  neighbours, solves), index)
        sparse = {"rate_sparse": len(index) / seconds, "sparse_max_diff": float(np.abs(values - exact).max()),
                  "sparse_solves": float(np.mean(solves))}
    return sparse | {"model": model, "pairs": len(index), "stage_pairs": stage_pairs,
            "rate_before": 1 / per_pair["before"], "rate_exact": 1 / per_pair["exact"],
            "rate_before_prep": 1 / (per_pair["before"] + pooled_prep / stage_pairs),
            "rate_exact_prep": 1 / (per_pair["exact"] + stored_prep / stage_pairs),
            "same_before": before[same].mean(), "different_before": before[~same].mean(),
            "same_exact": exact[same].mean(), "different_exact": exact[~same].mean(),
            "mean_abs_diff": np.abs(before - exact).mean(), "mean_diff": (before - exact).mean(),
            "support": float((stored.probs[index.ravel()] > 0).sum(axis=1).mean()),
            "pooled_support": float((pooled.probs[index.ravel()] > 0).sum(axis=1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400, help="seeded pairs per model (default 400)")
    parser.add_argument("--models", nargs="*", help="models (default: those of params.yaml with maps on disk)")
    parser.add_argument("--leam-dir", default="data/leam", help="LEAM outputs (default data/leam)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sparse", action="store_true",
                        help="also time the sparse, certified solver (k nearest arcs, grown until optimal)")
    parser.add_argument("--neighbours", type=int, default=8, help="--sparse: nearest partners per cell (default 8)")
    args = parser.parse_args()
    config = load_config(args.params)
    leam_dir = Path(args.leam_dir)
    models = args.models or [m for m in config.models if (leam_dir / m / "maps.npy").is_file()]
    if not models:
        sys.exit(f"no LEAM maps under {leam_dir}; run `dvc repro leam` first")
    print(f"EMD of the top {config.threshold:g} overall maps, one process: pooled {POOLED_GRID}x{POOLED_GRID} "
          f"(before) vs exact on the support at the stored grid (now); EMD in analysis-frame pixels")
    header = (f"{'model':<15} {'pairs':>5} {'cells':>9} {'before/s':>9} {'exact/s':>8} {'exact/before':>12} "
              f"{'w/ prep':>8} | {'same before':>11} {'exact':>6} | {'diff before':>11} {'exact':>6} | "
              f"{'gap before':>10} {'exact':>6} | {'|before-exact|':>14}")
    print(header)
    rows = []
    for model in models:
        row = bench_model(model, leam_dir, config.threshold, config.similarity.negative_policy, config.seed,
                          args.pairs, config.align.frame_size, args.neighbours if args.sparse else None)
        rows.append(row)
        print(f"{model:<15} {row['pairs']:>5} {row['pooled_support']:>4.0f}/{row['support']:<4.0f} "
              f"{row['rate_before']:>9.0f} {row['rate_exact']:>8.0f} {row['rate_exact'] / row['rate_before']:>12.2f} "
              f"{row['rate_exact_prep'] / row['rate_before_prep']:>8.2f} | {row['same_before']:>11.2f} "
              f"{row['same_exact']:>6.2f} | {row['different_before']:>11.2f} {row['different_exact']:>6.2f} | "
              f"{row['different_before'] - row['same_before']:>10.2f} "
              f"{row['different_exact'] - row['same_exact']:>6.2f} | {row['mean_abs_diff']:>14.2f}")
        if args.sparse:
            print(f"{'':<15} sparse certified ({args.neighbours} neighbours): {row['rate_sparse']:.0f} pairs/s, "
                  f"{row['rate_sparse'] / row['rate_exact']:.2f} x exact, {row['sparse_solves']:.1f} solves a pair, "
                  f"max |sparse - exact| {row['sparse_max_diff']:.1e} px")
    before = sum(r["pairs"] / r["rate_before"] for r in rows)
    exact = sum(r["pairs"] / r["rate_exact"] for r in rows)
    print(f"all models: exact/before pairs/s ratio {before / exact:.2f} (above 1: exact is faster); "
          f"cells = pooled/stored non-zero cells per map; 'w/ prep' adds each recipe's map -> distribution "
          f"time spread over the stage's pairs")


if __name__ == "__main__":
    main()
