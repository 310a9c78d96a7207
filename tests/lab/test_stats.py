"""The verdicts' arithmetic (lab/stats.py) on cases with a known answer, and each rule's three answers on
synthetic per-seed numbers: all on one side of the margin, all on the other, and across it."""

import importlib
import math

import pytest
from scipy import stats as scipy_stats

from experiments import EXPERIMENTS
from lab.stats import (
    ALPHA,
    FAILS,
    HOLDS,
    UNDECIDED,
    Interval,
    accuracy_interval,
    decide,
    holm,
    p_values,
    paired_difference,
    paired_log_ratio,
    sign_count,
    t_interval,
)


def test_t_interval_known_answer():
    # 1..5: mean 3, sample sd sqrt(2.5), t(0.975; 4 df) = 2.7764451: half-width 2.7764451 * sqrt(2.5 / 5)
    ci = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451052 * math.sqrt(0.5)
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.low == pytest.approx(3 - half, abs=1e-9) and ci.high == pytest.approx(3 + half, abs=1e-9)
    # two values: t(0.975; 1 df) = 12.7062047
    ci = t_interval([0.0, 2.0])
    assert (ci.low, ci.high) == pytest.approx((1 - 12.7062047, 1 + 12.7062047), abs=1e-6)


def test_degenerate_intervals():
    one = t_interval([4.0])  # one seed has no interval: never decided
    assert (one.mean, one.n) == (4.0, 1) and math.isnan(one.low) and math.isnan(one.high)
    assert all(decide(t_interval([0.3]), 0.0, claim) == UNDECIDED for claim in ("above", "below"))
    assert decide(t_interval([0.3]), 1.0, "within") == UNDECIDED
    assert one.text(".2f") == "4.00 (one seed: no interval)"
    assert one.ratio_text(".2f") == f"×{math.exp(4):.2f} (one seed: no interval)"
    assert t_interval([2.0, 2.0, 2.0]) == Interval(2.0, 2.0, 2.0, 3, 0.0, 2)
    nan = t_interval([1.0, math.inf])
    assert math.isnan(nan.mean) and decide(nan, 0.0, "below") == UNDECIDED
    with pytest.raises(ValueError):
        t_interval([])


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")  # n = 1
@pytest.mark.parametrize("values", [[4.0], [0.0, 2.0], [0.3, -0.1, 0.2], [1.0, 2.0, 3.0, 4.0, 5.0],
                                    [-0.15, -0.12, -0.18, -0.14, -0.16]])
def test_t_interval_is_scipys(values):
    """The interval of scipy.stats.ttest_1samp, one value included (NaN ends there)."""
    low, high = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    ci = t_interval(values)
    assert (ci.low, ci.high) == pytest.approx((float(low), float(high)), abs=1e-12, nan_ok=True)


def test_paired_measures_are_seed_by_seed():
    # a is exactly half of b in every seed, however much the seeds differ: no spread in the ratio
    b = [1.0, 10.0, 100.0]
    ci = paired_log_ratio([x / 2 for x in b], b)
    assert ci.mean == pytest.approx(math.log(0.5)) and ci.high - ci.low == pytest.approx(0.0, abs=1e-12)
    assert ci.ratio_text() == "×0.5 [0.5, 0.5]" and ci.ratio_text(".2f") == "×0.50 [0.50, 0.50]"
    d = paired_difference([3.0, 5.0, 7.0], [1.0, 3.0, 5.0])
    assert (d.mean, d.low, d.high) == (2.0, 2.0, 2.0)
    assert math.isnan(paired_log_ratio([0.0, 1.0], [1.0, 1.0]).mean)  # a log of zero decides nothing
    with pytest.raises(ValueError, match="one of each per seed"):
        paired_difference([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("values", "below", "above"),
    [
        ([-0.5, -0.4, -0.6, -0.45, -0.55], HOLDS, FAILS),  # every seed well below the margin 0
        ([0.5, 0.4, 0.6, 0.45, 0.55], FAILS, HOLDS),  # every seed well above it
        ([-0.5, 0.4, -0.1, 0.3, 0.0], UNDECIDED, UNDECIDED),  # the seeds disagree: the interval holds 0
        ([-0.2, -0.18, -0.22], HOLDS, FAILS),  # three seeds that agree closely decide too
        ([-0.2, -0.1, -0.3], UNDECIDED, UNDECIDED),  # three that agree on the sign, not closely: t(2 df) = 4.3
        ([-1.0, 0.1], UNDECIDED, UNDECIDED),  # two seeds that disagree cannot
    ],
)
def test_decide_gives_three_answers(values, below, above):
    ci = t_interval(values)
    assert decide(ci, 0.0, "below") == below and decide(ci, 0.0, "above") == above


def test_decide_uses_its_margin():
    ci = t_interval([-0.15, -0.12, -0.18, -0.14, -0.16])  # about 15% lower in log terms, tightly
    assert decide(ci, math.log(0.9), "below") == HOLDS  # at least 10% lower
    assert decide(ci, math.log(0.5), "below") == FAILS  # not half
    assert decide(ci, -0.15, "below") == UNDECIDED  # the margin inside the interval
    with pytest.raises(ValueError):
        decide(ci, 0.0, "sideways")


@pytest.mark.parametrize("name", [name for name, record in EXPERIMENTS.items() if record.verdicts])
def test_every_verdict_rule_on_synthetic_seeds(name):
    """Each rule an experiment decides its verdict rows by (its module's ``RULES``), fed five per-seed
    numbers all on the claim's side of its margin, all on the other side, and spread across it."""
    rules = importlib.import_module(f"experiments.{name}").RULES
    assert rules
    for what, rule in rules.items():
        if rule.claim == "within":  # inside (−margin, margin); beyond one end; across an end
            m = rule.margin
            assert rule.decide(t_interval([m * (0.1 + 0.01 * k) for k in range(5)])) == HOLDS, what
            assert rule.decide(t_interval([-m * (2 + 0.01 * k) for k in range(5)])) == FAILS, what
            assert rule.decide(t_interval([m * d for d in (0.2, 1.5, 0.9, 1.3, 0.7)])) == UNDECIDED, what
            continue
        toward = -1.0 if rule.claim == "below" else 1.0
        on_claim = [rule.margin + toward * (0.2 + 0.01 * k) for k in range(5)]
        against = [rule.margin - toward * (0.2 + 0.01 * k) for k in range(5)]
        across = [rule.margin + d for d in (-0.3, 0.2, 0.35, -0.1, 0.05)]
        assert rule.decide(t_interval(on_claim)) == HOLDS, what
        assert rule.decide(t_interval(against)) == FAILS, what
        assert rule.decide(t_interval(across)) == UNDECIDED, what
        near = [rule.margin + toward * d for d in (0.001, 0.002, 0.0015, 0.0012, 0.0018)]  # close, all agree
        assert rule.decide(t_interval(near)) == HOLDS, what


def test_a_within_claim_holds_inside_its_margin_and_fails_beyond_an_end():
    tight = t_interval([0.001, -0.002, 0.0015, 0.0, -0.001])  # agree to 0.3%
    assert decide(tight, 0.01, "within") == HOLDS
    assert decide(t_interval([0.05, 0.06, 0.055, 0.052, 0.058]), 0.01, "within") == FAILS  # 5% apart in every seed
    assert decide(t_interval([-0.03, -0.05, -0.04, -0.045, -0.035]), 0.01, "within") == FAILS  # the other side
    assert decide(t_interval([0.005, 0.02, -0.01, 0.012, 0.0]), 0.01, "within") == UNDECIDED  # across an end
    with pytest.raises(ValueError, match="margin above 0"):
        decide(tight, 0.0, "within")


@pytest.mark.parametrize("values", [[0.3, -0.1, 0.2], [1.0, 2.0, 3.0, 4.0, 5.0], [-0.15, -0.12, -0.18, -0.14, -0.16]])
@pytest.mark.parametrize("margin", [0.0, 0.1, -0.2])
def test_p_values_are_scipys_one_sided_t_tests(values, margin):
    ci = t_interval(values)
    greater = scipy_stats.ttest_1samp(values, margin, alternative="greater").pvalue
    less = scipy_stats.ttest_1samp(values, margin, alternative="less").pvalue
    assert ci.p_above(margin) == pytest.approx(greater, rel=1e-9)
    assert ci.p_below(margin) == pytest.approx(less, rel=1e-9)
    # one part alone: decided exactly where its 95% interval excludes the margin
    assert decide(ci, margin, "above") == (HOLDS if ci.low > margin else FAILS if ci.high < margin else UNDECIDED)


def test_one_seed_and_no_spread():
    one = t_interval([0.3])
    assert all(math.isnan(p) for p in p_values(one, 0.0, "above"))
    flat = t_interval([0.3, 0.3, 0.3])  # no spread seen: the side it lies on is certain
    assert (flat.p_above(0.0), flat.p_below(0.0)) == (0.0, 1.0) and decide(flat, 0.0, "above") == HOLDS


def test_accuracy_interval_known_cases():
    # one item each way is no spread over items; seeds 0.6, 0.8: the t-interval of the seeds alone
    seeds_only = accuracy_interval([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    assert seeds_only.mean == pytest.approx(0.7) and seeds_only.n == 2
    # the same items right in every seed: no spread over seeds; the items' binomial error alone,
    # se² = p(1 − p)·N/(N − 1) / N, with the t of n − 1 degrees of freedom
    same = [[1] * 90 + [0] * 10] * 5
    se = math.sqrt(0.9 * 0.1 * 100 / 99 / 100)
    t = scipy_stats.t.ppf(0.975, 4)
    ci = accuracy_interval(same)
    assert (ci.low, ci.high) == pytest.approx((0.9 - t * se, 0.9 + t * se), abs=1e-12)
    # both: the two variances add
    rows = [[1] * 80 + [0] * 20, [1] * 90 + [0] * 10, [1] * 85 + [0] * 15]
    item_means = [sum(col) / 3 for col in zip(*rows, strict=True)]
    m = sum(item_means) / 100
    items = sum((v - m) ** 2 for v in item_means) / 99 / 100
    seeds = scipy_stats.tvar([0.8, 0.9, 0.85]) / 3
    assert accuracy_interval(rows).se == pytest.approx(math.sqrt(items + seeds), rel=1e-12)


def test_accuracy_interval_stays_in_bounds_at_0_and_1():
    perfect = accuracy_interval([[1] * 500] * 5)
    assert (perfect.mean, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    nothing = accuracy_interval([[0] * 500] * 5)
    assert (nothing.low, nothing.high) == (0.0, 0.0)
    near = accuracy_interval([[1] * 499 + [0], [1] * 500, [1] * 498 + [0, 0]])  # an interval that would pass 1
    assert near.high == 1.0 and near.low < near.mean < 1.0
    diff = accuracy_interval([[1] * 10, [1] * 9 + [0]], (-1.0, 1.0))
    assert -1.0 <= diff.low <= diff.high <= 1.0
    one = accuracy_interval([[1, 0, 1]])
    assert one.n == 1 and math.isnan(one.low) and decide(one, 0.5, "above") == UNDECIDED
    with pytest.raises(ValueError, match="one row per seed"):
        accuracy_interval([[1]])


def test_sign_count_is_scipys_binomial_test_with_ties_against():
    values = [0.5, 0.5, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # 9 above 0, one tie
    count = sign_count(values)
    assert (count.above, count.ties, count.below, count.median) == (9, 1, 0, 0.5)
    assert count.p_above(0.0) == pytest.approx(scipy_stats.binomtest(9, 10, 0.5, alternative="greater").pvalue)
    assert count.p_below(0.0) == pytest.approx(scipy_stats.binomtest(1, 10, 0.5, alternative="greater").pvalue)
    assert decide(count, 0.0, "above") == HOLDS  # p = 11/1024
    assert count.text(".2g") == "median 0.5; 9 of 10 seeds above 0, 1 tied"
    with pytest.raises(ValueError, match="against 0"):
        count.p_above(1.0)


def test_ties_count_against_larger():
    tied = sign_count([0.0] * 10)  # a tie in every seed: evidence of no difference at the grid's resolution
    assert decide(tied, 0.0, "above") == FAILS
    five = sign_count([0.5] * 5)  # 5 seeds all above: p = 1/32 > 2.5%, never decided
    assert five.p_above(0.0) == pytest.approx(1 / 32) and decide(five, 0.0, "above") == UNDECIDED
    six = sign_count([0.5] * 6)
    assert decide(six, 0.0, "above") == HOLDS  # 1/64
    assert decide(sign_count([0.5]), 0.0, "above") == UNDECIDED  # one seed
    assert decide(sign_count([0.5, 0.5]), 0.0, "above") == UNDECIDED  # two: 1/4
    assert sign_count([math.nan, 1.0, 1.0]).ties == 1


def test_tost_is_two_one_sided_t_tests():
    values = [0.001, -0.002, 0.0015, 0.0, -0.001]
    ci = t_interval(values)
    lower = scipy_stats.ttest_1samp(values, -0.01, alternative="greater").pvalue
    upper = scipy_stats.ttest_1samp(values, 0.01, alternative="less").pvalue
    holds, fails = p_values(ci, 0.01, "within")
    assert holds == pytest.approx(max(lower, upper), rel=1e-9)
    assert fails == pytest.approx(min(1 - lower, 1 - upper), rel=1e-9)
    assert decide(ci, 0.01, "within") == HOLDS


def test_holm_known_case():
    # Holm 1979's step-down at alpha 0.05 over four p-values 0.01, 0.04, 0.03, 0.005: thresholds 0.0125,
    # 0.0167, 0.025, 0.05 for the sorted 0.005, 0.01, 0.03 (stops: above 0.025), 0.04
    pairs = [(0.01, 0.99), (0.04, 0.96), (0.97, 0.03), (0.995, 0.005)]
    assert holm(pairs, 0.05) == [HOLDS, UNDECIDED, UNDECIDED, FAILS]
    # as statsmodels' multipletests(method="holm") rejects: adjusted p = max over the sorted prefix of (k − i)·p
    adjusted = [min(1.0, max((4 - j) * p for j, p in enumerate(sorted([0.01, 0.04, 0.03, 0.005])[:i + 1])))
                for i in range(4)]
    assert [a <= 0.05 for a in adjusted] == [True, True, False, False]
    assert holm([(0.01, 0.99)]) == [HOLDS] and holm([(0.03, 0.97)]) == [UNDECIDED]  # alone: at ALPHA = 2.5%
    assert ALPHA == pytest.approx(0.025)
    assert holm([(math.nan, math.nan), (0.001, 0.999)]) == [UNDECIDED, HOLDS]
    assert holm([]) == []
