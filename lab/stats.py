"""Paired statistics over seeds: the arithmetic every verdict is decided by.

The nets of a comparison share their initial weights and their batches seed by seed, so each seed
gives one paired number: the difference of the two nets' measures, or, for a measure that is a
positive scale (an MSE, a gradient change), the log of their ratio. Each part of a verdict is a claim
about the mean (or, for grid-valued numbers, the median) of those per-seed numbers against a margin,
and has three answers: it *holds* when the data reject its opposite, *does not hold* when they reject
it, and is *not decided* when they reject neither. One seed is never decided.

Which test, and why:

* **Continuous per-seed numbers** (``t_interval``): Student's t with n − 1 degrees of freedom
  (``scipy.stats.t``; its interval is ``scipy.stats.ttest_1samp(...).confidence_interval()``). With 3
  to 10 seeds no bootstrap over seeds has enough distinct resamples to do better (Bouthillier et al.
  2021, "Accounting for Variance in Machine Learning Benchmarks", on deciding by intervals over seeds
  rather than by two means).
* **Accuracies on a test set** (``accuracy_interval``): the seeds are one source of variance and the
  test items another: another draw of 500 digits would score differently. The standard error adds the
  two, se² = s²_seeds / n + s²_items / N, where s²_items is the variance over the N test items of each
  item's score (right or wrong, or the paired difference of two nets' scores) averaged over the seeds
  (the variance of a mean over a crossed seeds × items design; the items' term is the one a paired
  test over test items uses, e.g. McNemar's; Dietterich 1998, "Approximate Statistical Tests for
  Comparing Supervised Classification Learning Algorithms"). It counts a little of the seeds' variance
  twice, so it errs wide. Its t has n − 1 degrees of freedom, and its interval is cut to the values
  an accuracy can take ([0, 1], or [−1, 1] for a difference): the cut keeps the coverage, since the
  true value lies inside.
* **Grid-valued numbers** (``sign_count``): a largest learning rate on a grid half a decade apart
  takes a few values, and ties are common; a t-interval of five equal values has zero width. The claim
  "above the margin" is a claim about the median: the exact binomial (sign) test
  (``scipy.stats.binomtest``) of how many seeds lie above it, **a tie counting against the claim**
  (Conover 1999, "Practical Nonparametric Statistics", §3.4, the sign test; ties against the claim
  make it conservative for "holds"). "Does not hold" is the same test of the seeds that do not lie
  above. With 5 seeds the smallest one-sided p is 1/32, above the level below: 5 seeds cannot decide a
  grid-valued claim, so these experiments train 10.
* **"Within a margin"** (the two agree): two one-sided tests (TOST; Schuirmann 1987, "A comparison of
  the two one-sided tests procedure and the power approach for assessing the equivalence of average
  bioavailability"): it holds when both "above −m" and "below m" are rejected, which at each side's
  level 2.5% is the 95% interval lying inside (−m, m); it does not hold when the mean is shown beyond
  one end.

**The error rate, and the family.** Each direction of each part is a one-sided test at ``ALPHA`` =
2.5%, so a part alone is decided exactly where its 95% interval excludes the margin (``decide``). A
row of the verdict table has several parts (ranges, optimisers, readings), and the chance that one
of k parts is decided wrongly grows with k. The parts of a row are one family, and Holm's step-down
procedure (Holm 1979, "A Simple Sequentially Rejective Multiple Test Procedure"; ``holm``) controls
its family-wise error at ``ALPHA`` per direction: sort the parts' p-values, decide the i-th smallest
(of k) while p ≤ ALPHA / (k − i + 1), and stop at the first that is not. A part whose own interval
excludes the margin but which Holm does not decide says so ("not decided (Holm)").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = (1 - CONFIDENCE) / 2  # each direction of each part: one-sided, so one part decides as its 95% interval does
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "not decided"
CLAIMS = ("below", "above", "within")


@dataclass(frozen=True)
class Interval:
    """The mean of n per-seed numbers, its two-sided confidence interval, and what its tests need: the
    standard error and the t's degrees of freedom (NaN where there is no interval)."""

    mean: float
    low: float
    high: float
    n: int
    se: float = math.nan
    df: int = 0

    def text(self, fmt: str = ".2g") -> str:
        if self.n < 2:
            return f"{self.mean:{fmt}} (one seed: no interval)"
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def ratio_text(self, fmt: str = ".3g") -> str:
        """For a mean log-ratio: the geometric-mean ratio and its interval, ``×0.52 [0.4, 0.68]``."""
        if self.n < 2:
            return f"×{math.exp(self.mean):{fmt}} (one seed: no interval)"
        return f"×{math.exp(self.mean):{fmt}} [{math.exp(self.low):{fmt}}, {math.exp(self.high):{fmt}}]"

    def p_above(self, margin: float) -> float:
        """The one-sided p-value of "the mean lies above ``margin``" (small when the data say it does):
        the t-test of the mean ≤ margin. NaN without an interval; with no spread, 0 or 1."""
        if self.n < 2 or math.isnan(self.se) or math.isnan(self.mean):
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean > margin else 1.0
        return float(scipy_stats.t.sf((self.mean - margin) / self.se, self.df))

    def p_below(self, margin: float) -> float:
        """The one-sided p-value of "the mean lies below ``margin``"."""
        if self.n < 2 or math.isnan(self.se) or math.isnan(self.mean):
            return math.nan
        if self.se == 0:
            return 0.0 if self.mean < margin else 1.0
        return float(scipy_stats.t.cdf((self.mean - margin) / self.se, self.df))


def _t(mean: float, se: float, n: int, bounds: tuple[float, float] = (-math.inf, math.inf),
       confidence: float = CONFIDENCE) -> Interval:
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Interval(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), n, se, n - 1)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE,
               bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """The mean of ``values`` and its t-interval (cut to ``bounds``, the values the mean can take: a
    fraction's [0, 1]). A single value has no interval (NaN ends, as
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
    return _t(mean, sd / math.sqrt(n), n, bounds, confidence)


def accuracy_interval(scores: Sequence[Sequence[float]], bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """The mean accuracy (or paired difference of accuracies) of ``scores`` (seeds × test items: each
    item's score in each seed, 1 right and 0 wrong, or a difference of two such), with both the seeds'
    and the test items' sampling error in its interval (the module's note), cut to ``bounds``."""
    table = torch.as_tensor(scores, dtype=torch.float64)
    if table.dim() != 2 or table.shape[0] == 0 or table.shape[1] < 2:
        raise ValueError(f"scores need one row per seed and at least two test items, got shape {tuple(table.shape)}")
    n, items = table.shape
    per_seed = [math.fsum(row) / items for row in table.tolist()]
    mean = math.fsum(per_seed) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    seeds = math.fsum((v - mean) ** 2 for v in per_seed) / (n - 1)
    item_means = [math.fsum(column) / n for column in table.T.tolist()]  # fsum: the same bits on any CPU
    centre = math.fsum(item_means) / items
    spread = math.fsum((v - centre) ** 2 for v in item_means) / (items - 1)
    return _t(mean, math.sqrt(seeds / n + spread / items), n, bounds)


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


@dataclass(frozen=True)
class SignCount:
    """Grid-valued per-seed numbers against a margin: how many seeds lie above it, on it, below it,
    and their median (the claim a sign test decides)."""

    margin: float
    above: int
    ties: int
    below: int
    median: float

    @property
    def n(self) -> int:
        return self.above + self.ties + self.below

    def text(self, fmt: str = ".2g") -> str:
        return f"median {self.median:{fmt}}; {self.above} of {self.n} seeds above {self.margin:g}, {self.ties} tied"

    def ratio_text(self, fmt: str = ".3g") -> str:
        return self.text(fmt)

    def _p(self, k: int, margin: float) -> float:
        if margin != self.margin:
            raise ValueError(f"this count is against {self.margin:g}, not {margin:g}")
        if self.n < 2:
            return math.nan
        return float(scipy_stats.binomtest(k, self.n, 0.5, alternative="greater").pvalue)

    def p_above(self, margin: float) -> float:
        """The sign test's one-sided p-value of "the median lies above the margin", ties against it."""
        return self._p(self.above, margin)

    def p_below(self, margin: float) -> float:
        """The same test of "the median does not lie above the margin": the seeds below it or tied."""
        return self._p(self.below + self.ties, margin)


def sign_count(values: Sequence[float], margin: float = 0.0) -> SignCount:
    """How ``values`` (grid-valued, one per seed) lie against ``margin``; a value that is not finite
    counts as tied (it says nothing either way)."""
    if not values:
        raise ValueError("a count needs at least one value")
    finite = [v for v in values if math.isfinite(v)]
    above = sum(v > margin for v in finite)
    below = sum(v < margin for v in finite)
    median = float(torch.tensor(finite, dtype=torch.float64).quantile(0.5)) if finite else math.nan
    return SignCount(margin, above, len(values) - above - below, below, median)


def p_values(evidence: Interval | SignCount, margin: float, claim: str) -> tuple[float, float]:
    """The one-sided p-values of the claim (that the mean lies "below" or "above" ``margin``, or
    "within" ``margin`` of 0) and of its opposite: (p that it holds, p that it does not). For "within":
    the two one-sided tests' larger p (TOST), and the smaller p of the mean lying beyond an end."""
    if claim not in CLAIMS:
        raise ValueError(f"claim must be 'below', 'above' or 'within', got {claim!r}")
    if claim == "within":
        if not margin > 0:
            raise ValueError(f"a 'within' claim needs a margin above 0, got {margin}")
        inside = max(evidence.p_above(-margin), evidence.p_below(margin))
        return inside, min(evidence.p_above(margin), evidence.p_below(-margin))
    if claim == "above":
        return evidence.p_above(margin), evidence.p_below(margin)
    return evidence.p_below(margin), evidence.p_above(margin)


def holm(pairs: Sequence[tuple[float, float]], alpha: float = ALPHA) -> list[str]:
    """Holm's step-down over a family of parts, each given as (p that it holds, p that it does not):
    each part's evidence is its smaller p (a NaN is never decided); sorted, the i-th smallest of k is
    decided while p ≤ alpha / (k − i + 1). One part alone: decided where p ≤ alpha."""
    best = [min((p for p in pair if not math.isnan(p)), default=math.nan) for pair in pairs]
    answers = [UNDECIDED] * len(pairs)
    order = sorted((i for i, p in enumerate(best) if not math.isnan(p)), key=lambda i: best[i])
    for rank, i in enumerate(order):
        if best[i] > alpha / (len(pairs) - rank):
            break
        holds, fails = pairs[i]
        answers[i] = HOLDS if holds == best[i] else FAILS
    return answers


def decide(evidence: Interval | SignCount, margin: float, claim: str) -> str:
    """One part alone: the answer to the claim "the mean is below ``margin``" (``claim="below"``),
    "above it" (``claim="above"``), or "within ``margin`` of 0" (``claim="within"``, a margin above 0:
    the two agree), each direction a one-sided test at ``ALPHA``. For a t-interval: ``HOLDS`` when the
    whole 95% interval is on the claim's side (inside (−margin, margin)), ``FAILS`` when it is wholly on
    the other side (beyond one end), ``UNDECIDED`` when it contains the margin or is NaN."""
    return holm([p_values(evidence, margin, claim)])[0]


@dataclass(frozen=True)
class Rule:
    """A verdict's rule: the claim that the per-seed numbers lie ``claim`` ("below" or "above")
    ``margin``, or "within" ``margin`` of 0 (``p_values``). Each experiment that decides a verdict names
    its rules (its module's ``RULES``), so that a test can feed each one numbers of its own."""

    margin: float
    claim: str

    def p_values(self, evidence: Interval | SignCount) -> tuple[float, float]:
        return p_values(evidence, self.margin, self.claim)

    def decide(self, evidence: Interval | SignCount) -> str:
        return decide(evidence, self.margin, self.claim)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)
