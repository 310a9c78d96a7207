"""A verdict row's parts (lab/verdicts.py): Holm's step-down over them, the verdict column it writes, and
each part as data."""

import json
import math

import experiments
from lab import stats
from lab.stats import HOLDS, UNDECIDED, Rule, sign_count, t_interval
from lab.verdicts import Part, Verdict

ABOVE = Rule(0.0, "above")


def row(*parts: Part) -> Verdict:
    return Verdict("an explanation", "a prediction", "a measurement", "a rule", tuple(parts), "[page](docs/page.md)")


def test_holm_over_a_rows_parts():
    clear = t_interval([0.5, 0.52, 0.49, 0.51, 0.5])  # p ≈ 1e-8: decided in any family
    borderline = t_interval([0.1, 0.3, 0.2, 0.25, 0.05])  # p ≈ 0.005: decided alone, not as one of six
    alone = row(Part("b", "x", borderline, ABOVE))
    assert alone.answers() == [HOLDS] and alone.verdict == "b: **holds**"
    assert borderline.p_above(0.0) > stats.ALPHA / 6
    family = row(*(Part(f"p{i}", "x", clear, ABOVE) for i in range(5)), Part("b", "x", borderline, ABOVE))
    assert family.answers() == [HOLDS] * 5 + [HOLDS]  # the last of the step-down: its threshold is ALPHA again
    tight = row(Part("b", "x", borderline, ABOVE), *(Part(f"u{i}", "x", t_interval([-1.0, 1.0, 0.5]), ABOVE)
                                                     for i in range(5)))
    assert tight.answers() == [UNDECIDED] * 6
    assert tight.verdict.startswith("b: not decided (Holm); u0: not decided;")


def test_facts_and_grid_valued_parts():
    fact = Part("within 10 epochs", "some rate trains it", answer="yes")
    grid = Part("adam", "decades", sign_count([0.5] * 9 + [0.0]), ABOVE)
    verdict = row(grid, fact)
    assert verdict.answers() == [HOLDS, "yes"] and verdict.verdict == "adam: **holds**; within 10 epochs: **yes**"
    assert row(Part("", "decades", sign_count([-0.5] * 10), ABOVE)).verdict == "**does not hold**"
    assert row(Part("", "x", t_interval([0.3]), ABOVE)).answers() == [UNDECIDED]  # one seed


def test_each_part_as_data():
    verdict = row(Part("a", "log(MyBN / plain)", t_interval([-0.5, -0.4, -0.6]), Rule(0.0, "below"), budget="4 epochs",
                       scale="log-ratio"),
                  Part("b", "decades", sign_count([0.5] * 10), ABOVE), Part("c", "a fact", answer="no"))
    a, b, c = verdict.records()
    assert a["row"] == "an explanation" and a["budget"] == "4 epochs" and a["test"] == "t" and a["n"] == 3
    assert a["claim"] == "below" and a["p_holds"] < stats.ALPHA and a["answer"] == HOLDS
    assert (b["test"], b["above"], b["ties"], b["answer"]) == ("sign", 10, 0, HOLDS)
    assert c["answer"] == "no" and "test" not in c
    text = experiments.verdict_data([verdict])
    data = json.loads(text)
    assert data["alpha"] == stats.ALPHA and len(data["parts"]) == 3
    one = json.loads(experiments.verdict_data([row(Part("d", "x", t_interval([0.3]), ABOVE))]))["parts"][0]
    assert one["low"] is None and one["p_holds"] is None and one["answer"] == UNDECIDED  # NaN as null
    assert math.isclose(data["parts"][0]["mean"], -0.5)


def test_a_parts_estimate_and_claim_read_as_its_scale_says():
    """The README's marks and docs/verdicts.md's claims, on parts with known numbers."""
    import math

    from lab.verdicts import claim_text, estimate

    ratio = {"scale": "log-ratio", "test": "t", "mean": math.log(0.5), "claim": "below", "margin": math.log(0.9)}
    assert (estimate(ratio), claim_text(ratio)) == ("×0.5", "below ×0.9")
    assert estimate({**ratio, "mean": math.log(154.2)}) == "×154"  # no exponent
    within = {**ratio, "claim": "within", "margin": math.log(1.02)}
    assert claim_text(within) == "within ×0.98–1.02"
    gap = {"scale": "difference", "test": "t", "mean": -0.0271, "claim": "below", "margin": 0.0}
    assert (estimate(gap), claim_text(gap)) == ("-0.027", "below 0")
    level = {**gap, "mean": 0.972, "claim": "above", "margin": 0.5}  # an accuracy against a level: unsigned
    assert (estimate(level), claim_text(level)) == ("0.97", "above +0.5")
    sign = {"scale": "difference", "test": "sign", "median": 1.0, "claim": "above", "margin": 0.0}
    assert estimate(sign) == "+1" and estimate({**gap, "mean": None}) == ""
    assert claim_text({"scale": "difference", "answer": "yes"}) == "a fact"


def test_the_forest_plot_puts_a_rows_scales_in_panels_of_their_own_and_balances_its_columns():
    from lab.forest import columns, panels

    def part(row, scale):
        return {"row": row, "scale": scale, "claim": "above"}

    records = [part("a", "log-ratio"), part("a", "difference"), part("a", "log-ratio"), part("b", "difference"),
               {"row": "b", "scale": "difference"}]  # a fact: not drawn
    assert [(row, scale, len(parts)) for row, scale, parts in panels(records)] == [
        ("a", "log-ratio", 2), ("a", "difference", 1), ("b", "difference", 1)]
    groups = [(str(i), "difference", [{}] * n) for i, n in enumerate((10, 2, 2, 2, 2, 2))]
    # panel heights 3.15 and 1.23 inches: 4.38 against 4.92 (the first alone: 3.15 against 6.15)
    assert [[g[0] for g in col] for col in columns(groups)] == [["0", "1"], ["2", "3", "4", "5"]]


def test_the_forest_plot_draws_one_panel_and_parts_without_an_interval(tmp_path):
    """A trial's smallest case: one row, one part with one seed (no interval), one sign-test part."""
    from lab.forest import plot_verdicts

    one = {"row": "r", "part": "p", "budget": "", "evaluation": "", "scale": "difference", "test": "t", "n": 1,
           "mean": 0.1, "low": None, "high": None, "claim": "above", "margin": 0.0, "answer": "not decided"}
    sign = {**one, "part": "q", "test": "sign", "median": 1.0, "above": 3, "ties": 0, "below": 0, "n": 3}
    plot_verdicts([one, sign], tmp_path / "verdicts.png")
    assert (tmp_path / "verdicts.png").stat().st_size > 5_000
