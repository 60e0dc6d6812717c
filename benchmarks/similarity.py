"""Benchmark: all-pairs Bhattacharyya coefficient and exact EMD throughput.

Prints, in one run:
- BC for all pairs of 2,000 distributions (14 x 14 grid) as one matrix product, against a per-pair Python
  loop measured on a sample of pairs and scaled to all pairs (target: < 1 s);
- BC of the stage's pairs only (``bhattacharyya_pairs``: about 25 pairs per photo, top-1% maps on the stored
  112 x 112 grid) at 844, 2,000 and 4,000 photos, through the all-pairs matrix and through each pair's own
  dot product: seconds, cost per matrix entry and per pair, and their ratio, the break-even
  ``BC_MATRIX_MAX_WASTE`` (the matrix pays while N * N <= ratio x pairs);
- exact EMD (POT network simplex) pairs/s on 14 x 14 and 28 x 28 grids, for full (dense) and top-1%
  (sparse) maps, with 1 and 2 worker processes, and the 2-vs-1 ratio (``benchmarks/emd.py`` compares the
  stage's exact top-t EMD on the stored grid with the former pooled one on real maps).

Maps are seeded synthetic relevance fields (a few Gaussian blobs on a 112 x 112 frame plus noise).

Usage: python benchmarks/similarity.py [--maps 2000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leam.metrics.distributions import cell_centres, maps_to_distributions  # noqa: E402
from leam.metrics.similarity import BC_MATRIX_MAX_WASTE, bhattacharyya_matrix, bhattacharyya_pairs, emd_pairs  # noqa: E402

TARGET_BC_S = 1.0


def blob_maps(count: int, size: int = 112, seed: int = 0) -> np.ndarray:
    """(count, size, size) float32 non-negative fields: 3 Gaussian blobs each plus uniform noise."""
    rng = np.random.default_rng(seed)
    coords = np.arange(size, dtype=np.float32)
    centres = rng.uniform(0.25 * size, 0.75 * size, size=(count, 3, 2)).astype(np.float32)
    dx = (coords[None, None, :] - centres[..., 0:1]) ** 2  # (count, 3, size)
    dy = (coords[None, None, :] - centres[..., 1:2]) ** 2
    sigma2 = 2 * (0.07 * size) ** 2
    fields = np.einsum("nby,nbx->nyx", np.exp(-dy / sigma2), np.exp(-dx / sigma2))
    return (fields + 0.05 * rng.random(fields.shape, dtype=np.float32)).astype(np.float32)


def bench_bc(count: int) -> None:
    probs = maps_to_distributions(blob_maps(count), grid=14).probs
    start = time.perf_counter()
    matrix = bhattacharyya_matrix(probs)
    matrix_s = time.perf_counter() - start
    n_pairs = count * (count - 1) // 2
    rng = np.random.default_rng(1)
    sample = rng.integers(0, count, size=(20_000, 2))
    start = time.perf_counter()
    loop = [float(np.sum(np.sqrt(probs[i] * probs[j]))) for i, j in sample]
    loop_s = (time.perf_counter() - start) / len(sample) * n_pairs
    assert np.allclose(loop, matrix[sample[:, 0], sample[:, 1]])
    print(f"BC all pairs, {count} maps ({n_pairs:,} pairs, 14x14): matrix {matrix_s:.3f} s | per-pair loop "
          f"(scaled from 20,000 pairs) {loop_s:.1f} s | speed-up x{loop_s / matrix_s:.0f} | target < {TARGET_BC_S:.0f} s: "
          f"{'PASS' if matrix_s < TARGET_BC_S else 'FAIL'}")


def bench_bc_pairs(photos: list[int], pairs_per_photo: int = 25) -> None:
    for count in photos:
        probs = maps_to_distributions(blob_maps(count, seed=5), grid=112, fraction=0.01).probs
        rng = np.random.default_rng(6)
        a, b = rng.integers(0, count, size=(2, pairs_per_photo * count))
        times, values = {}, {}
        for name, waste in (("matrix", math.inf), ("dots", 0.0)):
            start = time.perf_counter()
            values[name] = bhattacharyya_pairs(probs, a, b, matrix_max_waste=waste)
            times[name] = time.perf_counter() - start
        np.testing.assert_allclose(values["matrix"], values["dots"], rtol=1e-4, atol=1e-6)
        entry, pair = times["matrix"] / count ** 2, times["dots"] / a.size
        chosen = "matrix" if count * count <= BC_MATRIX_MAX_WASTE * a.size else "dots"
        print(f"BC of {a.size:,} pairs of {count:,} top-1% maps (112x112): matrix {times['matrix']:.2f} s "
              f"({entry * 1e9:.0f} ns an entry) | dots {times['dots']:.2f} s ({pair * 1e6:.1f} us a pair) | "
              f"break-even waste {pair / entry:.0f} (set: {BC_MATRIX_MAX_WASTE:g}, takes {chosen})")


def bench_emd(grid: int, fraction: float, n_pairs: int) -> None:
    probs = maps_to_distributions(blob_maps(64, seed=2), grid=grid, fraction=fraction).probs
    centres = cell_centres(grid, 224)
    rng = np.random.default_rng(3)
    pairs = rng.integers(0, probs.shape[0], size=(n_pairs, 2))
    rates, values = {}, {}
    emd_pairs(probs, pairs[:4], centres, workers=2, chunk=2)  # start the process server once (one-off cost)
    for workers in (1, 2):
        start = time.perf_counter()
        values[workers] = emd_pairs(probs, pairs, centres, workers=workers, chunk=max(1, math.ceil(n_pairs / 8)))
        rates[workers] = n_pairs / (time.perf_counter() - start)
    assert np.array_equal(values[1], values[2])
    kind = "full" if fraction >= 1 else f"top {fraction:g}"
    print(f"EMD {grid}x{grid} {kind:>8}: 1 process {rates[1]:8.1f} pairs/s | 2 processes {rates[2]:8.1f} pairs/s "
          f"| 2-vs-1 x{rates[2] / rates[1]:.2f}")


def bench_pool_startup() -> None:
    probs = maps_to_distributions(blob_maps(8, seed=4), grid=14).probs
    centres = cell_centres(14, 224)
    pairs = np.array([[0, 1], [2, 3]])
    start = time.perf_counter()
    emd_pairs(probs, pairs, centres, workers=2, chunk=1)
    first = time.perf_counter() - start
    start = time.perf_counter()
    emd_pairs(probs, pairs, centres, workers=2, chunk=1)
    print(f"EMD worker pool start-up: first {first:.2f} s (process server imports POT once), then "
          f"{time.perf_counter() - start:.2f} s per pool; excluded from the rates below")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=2000, help="maps for the all-pairs BC (default 2000)")
    parser.add_argument("--quick", action="store_true", help="fewer EMD pairs (smoke test)")
    args = parser.parse_args()
    bench_bc(args.maps)
    bench_bc_pairs([844] if args.quick else [844, 2000, 4000])
    scale = 0.25 if args.quick else 1.0
    bench_pool_startup()
    bench_emd(14, 1.0, int(800 * scale))
    bench_emd(14, 0.01, int(4000 * scale))
    bench_emd(28, 1.0, int(120 * scale))
    bench_emd(28, 0.01, int(2000 * scale))


if __name__ == "__main__":
    main()
