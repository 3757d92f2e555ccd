"""The report's statistics from a handful of repeats: the Student-t quantile (computed without
scipy, checked against it), the 95% interval of a mean difference, and when it is significant."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from tune.stats import mean_sd, t_cdf, t_interval, t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 250])
def test_the_t_quantile_and_cdf_equal_scipys(df):
    for p in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
    for x in (-5.0, -0.3, 0.0, 1.2, 12.7):
        assert t_cdf(x, df) == pytest.approx(scipy_stats.t.cdf(x, df), rel=1e-9, abs=1e-12)


def test_the_interval_of_three_differences_is_the_textbook_t_interval():
    diffs = [1.5, -0.5, 2.9]
    ci = t_interval(diffs)
    m, s = statistics.fmean(diffs), statistics.stdev(diffs)
    half = scipy_stats.t.ppf(0.975, 2) * s / math.sqrt(3)
    assert (ci["low"], ci["high"]) == pytest.approx((m - half, m + half), rel=1e-9)
    assert ci["method"] == "Student t" and ci["confidence"] == 0.95 and ci["df"] == 2
    assert ci["significant"] is False                     # covers 0


def test_a_consistent_difference_is_significant_and_one_value_has_no_interval():
    assert t_interval([3.0, 3.2, 2.9])["significant"] is True
    assert t_interval([-3.0, -3.2, -2.9])["significant"] is True
    assert t_interval([4.0]) is None and t_interval([]) is None
    assert mean_sd([4.0]) == {"n": 1, "mean": 4.0, "sd": None}
