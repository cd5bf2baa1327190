"""The study's uncertainty: binomial standard errors per evaluation and Student-t intervals across seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

NORMAL_95 = 1.959963984540054
"""The 0.975 quantile of the standard normal (z of the 95% Wilson interval)."""


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% interval over `n` values; `low`/`high` are NaN when n < 2 (no spread to measure)."""

    mean: float
    low: float
    high: float
    n: int


def binomial_se(rate: float, trials: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of a rate measured on `trials` Bernoulli trials (NaN for none)."""
    if trials <= 0 or math.isnan(rate):
        return math.nan
    return math.sqrt(rate * (1.0 - rate) / trials)


def wilson_interval(rate: float, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate on `trials` trials (inside [0, 1] even at 0% or 100%)."""
    if trials <= 0 or math.isnan(rate):
        return math.nan, math.nan
    z2 = NORMAL_95**2
    centre = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half = NORMAL_95 * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    return centre - half, centre + half


def t_interval(values: list[float]) -> Interval:
    """Mean and 95% Student-t interval, mean +- t(0.975, n-1) s / sqrt(n); NaN values are skipped."""
    from scipy.stats import t

    kept = [v for v in values if not math.isnan(v)]
    n = len(kept)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(kept) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
