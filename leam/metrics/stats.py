"""Summary statistics shared by the analysis stages: means with bootstrap CIs and group comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps


def _bootstrap_weights(size: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, size) multinomial resampling counts, seeded by (seed, size) so every group of that size
    sees the same resamples whatever the grouping order."""
    rng = np.random.default_rng([seed, size])
    return rng.multinomial(size, np.full(size, 1.0 / size), size=n_boot).astype(np.float64)


def _percentile_ci(columns: np.ndarray, n_boot: int, seed: int, level: float) -> np.ndarray:
    """Percentile bootstrap CIs of the means of each column of ``columns`` (size, g) -> (2, g).

    The bootstrap means of all columns come from one matrix product with shared resampling weights,
    which is what makes thousands of groups (layers x thresholds x classes) cheap.
    """
    size = columns.shape[0]
    weights = _bootstrap_weights(size, n_boot, seed)
    alpha = (1.0 - level) / 2.0
    out = np.empty((2, columns.shape[1]))
    for start in range(0, columns.shape[1], 512):
        means = weights @ columns[:, start:start + 512] / size  # (n_boot, chunk)
        out[:, start:start + 512] = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return out


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite ``values``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or n_boot <= 0:
        return (float(values[0]), float(values[0])) if values.size == 1 else (float("nan"), float("nan"))
    low, high = _percentile_ci(values[:, None], n_boot, seed, level)[:, 0]
    return float(low), float(high)


def summarize(frame: pd.DataFrame, by: list[str], value: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per group: n, mean, std (ddof=1), and the 95% bootstrap CI of the mean of ``value``.

    Equals :func:`bootstrap_ci` group by group; groups of equal size are bootstrapped together.
    """
    keys_list, groups = [], []
    for keys, group in frame.groupby(by, sort=True, dropna=False):
        values = group[value].to_numpy(dtype=np.float64)
        keys_list.append(keys if isinstance(keys, tuple) else (keys,))
        groups.append(values[np.isfinite(values)])
    low = np.full(len(groups), np.nan)
    high = np.full(len(groups), np.nan)
    by_size: dict[int, list[int]] = {}
    for position, values in enumerate(groups):
        by_size.setdefault(values.size, []).append(position)
    for size, positions in by_size.items():
        if size == 1:
            low[positions] = high[positions] = [groups[p][0] for p in positions]
        elif size > 1 and n_boot > 0:
            ci = _percentile_ci(np.stack([groups[p] for p in positions], axis=1), n_boot, seed, 0.95)
            low[positions], high[positions] = ci[0], ci[1]
    rows = []
    for position, (keys, values) in enumerate(zip(keys_list, groups)):
        rows.append({**dict(zip(by, keys)), "n": int(values.size),
                     "mean": float(values.mean()) if values.size else float("nan"),
                     "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                     "ci_low": float(low[position]), "ci_high": float(high[position])})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "ci_low", "ci_high"])


def compare_groups(first, second) -> dict[str, float]:
    """Two-sided Mann-Whitney U test of ``first`` vs ``second`` with rank-biserial and Cohen's d effect sizes.

    rank_biserial = 2 * U / (n1 * n2) - 1: +1 when every value of ``first`` exceeds every value of ``second``.
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    first, second = first[np.isfinite(first)], second[np.isfinite(second)]
    if first.size == 0 or second.size == 0:
        return {"mannwhitney_u": float("nan"), "p_value": float("nan"), "rank_biserial": float("nan"), "cohens_d": float("nan")}
    result = sps.mannwhitneyu(first, second, alternative="two-sided")
    pooled = np.sqrt(((first.size - 1) * first.var(ddof=1) + (second.size - 1) * second.var(ddof=1))
                     / max(first.size + second.size - 2, 1)) if first.size > 1 and second.size > 1 else float("nan")
    cohens_d = float((first.mean() - second.mean()) / pooled) if pooled and np.isfinite(pooled) and pooled > 0 else float("nan")
    return {"mannwhitney_u": float(result.statistic), "p_value": float(result.pvalue),
            "rank_biserial": float(2.0 * result.statistic / (first.size * second.size) - 1.0), "cohens_d": cohens_d}


def paired_test(first, second, method: str = "auto") -> dict[str, float]:
    """Wilcoxon signed-rank test of paired samples (e.g. LEAM-guided vs random drops of the same images).

    ``method`` goes to :func:`scipy.stats.wilcoxon`; ``asymptotic`` (normal approximation with tie
    correction) avoids scipy's permutation path for small samples with ties, seconds per test.
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    keep = np.isfinite(first) & np.isfinite(second)
    diff = first[keep] - second[keep]
    if diff.size < 2 or np.allclose(diff, 0):
        return {"wilcoxon_w": float("nan"), "p_value": float("nan"), "n": int(diff.size)}
    result = sps.wilcoxon(first[keep], second[keep], method=method)
    return {"wilcoxon_w": float(result.statistic), "p_value": float(result.pvalue), "n": int(diff.size)}
