"""The verdicts' arithmetic (lab/stats.py) on cases with a known answer, and each rule's three answers on
synthetic per-seed numbers: all on one side of the margin, all on the other, and across it."""

import importlib
import math

import pytest
from scipy import stats as scipy_stats

from experiments import EXPERIMENTS
from lab.stats import FAILS, HOLDS, UNDECIDED, Interval, decide, paired_difference, paired_log_ratio, t_interval


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
    assert t_interval([2.0, 2.0, 2.0]) == Interval(2.0, 2.0, 2.0, 3)
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
