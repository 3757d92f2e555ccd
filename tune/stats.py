"""The statistics a report may claim from a handful of repeats: mean, sample sd, and a Student-t
confidence interval of a mean.

Why t and not a bootstrap: repeats are few (3 in the paper spaces, 2 in the demo). A percentile
bootstrap of 3 values has only 10 distinct resamples and gives intervals that are far too narrow;
the t interval is exact for normal noise and honest about how little n = 2 or 3 says (its
quantile is 12.7 at n = 2, 4.3 at n = 3). The quantile is computed here (regularised incomplete
beta, Lentz's continued fraction, then bisection) so the search's driver needs no scipy; the
tests check it against ``scipy.stats.t``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

#: The confidence of every interval the report gives.
CONFIDENCE = 0.95
METHOD = "Student t"


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None below two values)."""
    n = len(values)
    if not n:
        return {"n": 0, "mean": None, "sd": None}
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Optional[dict]:
    """The two-sided Student-t confidence interval of the mean of ``values``:
    ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)``; None below two values. ``significant`` is
    whether the interval excludes 0."""
    stats = mean_sd(values)
    n = stats["n"]
    if n < 2:
        return None
    q = t_quantile((1 + confidence) / 2, n - 1)
    half = q * stats["sd"] / math.sqrt(n)
    low, high = stats["mean"] - half, stats["mean"] + half
    return {"method": METHOD, "confidence": confidence, "n": n, "df": n - 1,
            "t_quantile": q, "low": low, "high": high,
            "significant": bool(low > 0 or high < 0)}


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h
