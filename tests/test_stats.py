"""Summary statistics on small known samples."""

import numpy as np
import pandas as pd
import pytest

from leam.metrics.stats import bootstrap_ci, compare_groups, paired_test, summarize


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 0.1, 20), rng.normal(0.3, 0.1, 2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < hi_s - lo_s
    # normal-theory width 2 * 1.96 * sd / sqrt(n) for the large sample
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * large.std(ddof=1) / np.sqrt(large.size), rel=0.15)
    assert bootstrap_ci([]) != bootstrap_ci([])  # NaNs
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_summarize_equals_per_group_bootstrap_and_ignores_nan():
    frame = pd.DataFrame({"g": ["a"] * 5 + ["b"] * 5 + ["c"] * 3,
                          "v": [1, 2, 3, 4, 5, 2, 4, 6, 8, 10, 1, np.nan, 3]})
    table = summarize(frame, ["g"], "v", n_boot=500, seed=3)
    assert table.n.tolist() == [5, 5, 2] and table["mean"].tolist() == [3.0, 6.0, 2.0]
    for _, row in table.iterrows():
        values = frame.loc[frame.g == row.g, "v"]
        assert (row.ci_low, row.ci_high) == pytest.approx(bootstrap_ci(values, n_boot=500, seed=3))
    assert table.loc[0, "std"] == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))


def test_group_comparisons():
    result = compare_groups(np.arange(10) + 100.0, np.arange(10))
    assert result["rank_biserial"] == 1.0 and result["p_value"] < 1e-3
    paired = paired_test(np.arange(1, 11) + 0.5, np.arange(1, 11))
    assert paired["n"] == 10 and paired["p_value"] < 0.01
