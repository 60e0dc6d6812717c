"""Summary statistics shared by the analysis stages: means with bootstrap CIs and group comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampled in one vectorised draw."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or n_boot <= 0:
        return float(values[0]) if values.size == 1 else float("nan"), float(values[0]) if values.size == 1 else float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(frame: pd.DataFrame, by: list[str], value: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per group: n, mean, std (ddof=1), and the 95% bootstrap CI of the mean of ``value``."""
    rows = []
    for keys, group in frame.groupby(by, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        values = group[value].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(by, keys)), "n": int(values.size),
                     "mean": float(values.mean()) if values.size else float("nan"),
                     "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                     "ci_low": low, "ci_high": high})
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


def paired_test(first, second) -> dict[str, float]:
    """Wilcoxon signed-rank test of paired samples (e.g. LEAM-guided vs random drops of the same images)."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    keep = np.isfinite(first) & np.isfinite(second)
    diff = first[keep] - second[keep]
    if diff.size < 2 or np.allclose(diff, 0):
        return {"wilcoxon_w": float("nan"), "p_value": float("nan"), "n": int(diff.size)}
    result = sps.wilcoxon(first[keep], second[keep])
    return {"wilcoxon_w": float(result.statistic), "p_value": float(result.pvalue), "n": int(diff.size)}
