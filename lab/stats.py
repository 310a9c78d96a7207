"""Paired statistics over seeds: the arithmetic every verdict is decided by.

The nets of a comparison share their initial weights and their batches seed by seed, so each seed
gives one paired number: the difference of the two nets' measures, or, for a measure that is a
positive scale (an MSE, a gradient change), the log of their ratio. A claim is decided on the 95%
confidence interval of the mean of those per-seed numbers: Student's t-interval with n − 1 degrees of
freedom (``scipy.stats.t``), which assumes the per-seed numbers roughly normal; with 3 to 5 seeds no
bootstrap over seeds has enough resamples to be better (Bouthillier et al. 2021, "Accounting for
Variance in Machine Learning Benchmarks", on deciding by intervals over seeds rather than by two
means).

Every rule has a margin and three answers (``decide``): it *holds* when the whole interval is on the
claim's side of the margin, *does not hold* when the whole interval is on the other side, and is
*not decided* by these seeds when the interval contains the margin. One seed is never decided: it has
no interval. A claim that two things agree
("within" a margin m of 0) holds when the whole interval lies inside (−m, m) and does not hold when
it lies wholly beyond one end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not decided"


@dataclass(frozen=True)
class Interval:
    """The mean of n per-seed numbers and its two-sided confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, fmt: str = ".2g") -> str:
        if self.n < 2:
            return f"{self.mean:{fmt}} (one seed: no interval)"
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def ratio_text(self, fmt: str = ".3g") -> str:
        """For a mean log-ratio: the geometric-mean ratio and its interval, ``×0.52 [0.4, 0.68]``."""
        if self.n < 2:
            return f"×{math.exp(self.mean):{fmt}} (one seed: no interval)"
        return f"×{math.exp(self.mean):{fmt}} [{math.exp(self.low):{fmt}}, {math.exp(self.high):{fmt}}]"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` and its t-interval. A single value has no interval (NaN ends, as
    ``scipy.stats.ttest_1samp(...).confidence_interval()`` gives): one seed decides nothing. Values that
    are all equal give an interval of zero width (no spread was seen); a value that is not finite makes
    it all NaN."""
    n = len(values)
    if n == 0:
        raise ValueError("an interval needs at least one value")
    mean = math.fsum(values) / n
    if not all(math.isfinite(v) for v in values):
        return Interval(math.nan, math.nan, math.nan, n)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_log_ratio(a: Sequence[float], b: Sequence[float]) -> Interval:
    """The mean over seeds of log(a_i / b_i) and its interval: how many times a is b's, seed by seed."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one of each per seed, got {len(a)} and {len(b)}")
    return t_interval([math.log(x / y) if x > 0 and y > 0 else math.nan for x, y in zip(a, b, strict=True)])


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """The mean over seeds of a_i − b_i and its interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one of each per seed, got {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b, strict=True)])


def decide(interval: Interval, margin: float, claim: str) -> str:
    """The answer to the claim "the mean is below ``margin``" (``claim="below"``), "above it"
    (``claim="above"``), or "within ``margin`` of 0" (``claim="within"``, a margin above 0: the two
    agree): ``HOLDS`` when the whole interval is on the claim's side (inside (−margin, margin)),
    ``FAILS`` when the whole interval is on the other side (beyond one end), ``UNDECIDED`` when it
    contains the margin, or an end of it (or is NaN)."""
    if claim not in ("below", "above", "within"):
        raise ValueError(f"claim must be 'below', 'above' or 'within', got {claim!r}")
    if math.isnan(interval.low) or math.isnan(interval.high):
        return UNDECIDED
    if claim == "within":
        if not margin > 0:
            raise ValueError(f"a 'within' claim needs a margin above 0, got {margin}")
        inside = -margin < interval.low and interval.high < margin
        return HOLDS if inside else FAILS if interval.low > margin or interval.high < -margin else UNDECIDED
    lower, upper = (interval.high < margin, interval.low > margin)  # all below, all above the margin
    if claim == "below":
        return HOLDS if lower else FAILS if upper else UNDECIDED
    return HOLDS if upper else FAILS if lower else UNDECIDED


@dataclass(frozen=True)
class Rule:
    """A verdict's rule: the claim that the mean of the per-seed numbers lies ``claim`` ("below" or
    "above") ``margin``, or "within" ``margin`` of 0, decided on their interval (``decide``). Each
    experiment that decides a verdict names its rules (its module's ``RULES``), so that a test can feed
    each one numbers of its own."""

    margin: float
    claim: str

    def decide(self, interval: Interval) -> str:
        return decide(interval, self.margin, self.claim)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)
