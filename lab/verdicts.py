"""Which explanation of batch norm holds here? The README's verdict table (``summary_table``: a line per
row, a mark per part) and every row whole on docs/verdicts.md (``details``), from the rows the experiments
that test an explanation declare (their record's ``verdicts``: experiments/ics, noisy, landscape, lr,
running_stats, mnist, conv, depth, scale and only_bn), in the registry's order.

Each row: the explanation, what it predicts on this task, what was measured, the rule, and its parts
(``Part``: one claim each, at one budget and one evaluation, with its evidence and its rule), whose
answers make the verdict column. Every rule is decided on paired per-seed numbers (``lab/stats.py``) and
has three answers: holds, does not hold, not decided; a row's parts are one family, corrected by Holm's
step-down. Each part is data too (``Verdict.records``, which compare.py writes to results/verdicts.json).
Nothing in the table is typed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lab import stats
from lab.pages import anchor, table
from lab.regression import final_mse, runs_of
from lab.results import at_budget, budgets, rounded


@dataclass(frozen=True)
class Part:
    """One part of a verdict: the claim its ``rule`` makes about a per-seed statistic, the evidence
    (``stats.Interval`` or ``stats.SignCount``), and where it applies (the training budget and the
    evaluation, where a row has several). A part with no rule is a fact (``answer``: "yes" or "no")."""

    label: str  # what it answers, e.g. "(-5, 5) adam", "falls"
    statistic: str  # the per-seed number, e.g. "decades, MyBN − plain"
    evidence: stats.Interval | stats.SignCount | None = None
    rule: stats.Rule | None = None
    budget: str = ""
    evaluation: str = ""
    answer: str = ""  # a fact's answer; a rule's comes from the row's Holm step-down
    scale: str = "difference"  # how the evidence reads: "difference", or "log-ratio" (shown as ×)

    def p_values(self) -> tuple[float, float] | None:
        return None if self.rule is None else self.rule.p_values(self.evidence)


@dataclass(frozen=True)
class Verdict:
    """One row of the README's verdict table: an explanation of batch norm, what it predicts on this
    task, what was measured, the rule, its parts, and where the evidence is. The row's answers come from
    its parts: the parts with a rule are one family, decided by Holm's step-down (``stats.holm``)."""

    explanation: str
    predicts: str
    measured: str
    rule: str  # how the verdict is decided, with its margin
    parts: tuple[Part, ...]
    evidence: str  # a Markdown link to the page that shows it (method, figures, tables)

    def answers(self) -> list[str]:
        """Each part's answer: Holm's over the parts with a rule, a fact's own."""
        tested = [i for i, part in enumerate(self.parts) if part.rule is not None]
        decided = dict(zip(tested, stats.holm([self.parts[i].p_values() for i in tested]), strict=True))
        return [decided.get(i, part.answer) for i, part in enumerate(self.parts)]

    def verdict_cells(self) -> list[str]:
        """Each part's answer, in bold where decided; "not decided (Holm)" where the part alone would be
        decided but the family's correction does not decide it."""
        cells = []
        for part, answer in zip(self.parts, self.answers(), strict=True):
            text = bold(answer)
            if part.rule is not None and answer == stats.UNDECIDED and part.rule.decide(part.evidence) != answer:
                text = f"{stats.UNDECIDED} (Holm)"
            cells.append(text)
        return cells

    @property
    def verdict(self) -> str:
        """The verdict column: each part's label and answer (``verdict_cells``)."""
        return "; ".join(f"{part.label}: {text}" if part.label else text
                         for part, text in zip(self.parts, self.verdict_cells(), strict=True))

    def records(self) -> list[dict]:
        """Each part as data (``compare.py`` writes them to results/verdicts.json)."""
        out = []
        for part, answer in zip(self.parts, self.answers(), strict=True):
            ev = part.evidence
            record = {"row": self.explanation, "part": part.label, "budget": part.budget,
                      "evaluation": part.evaluation, "statistic": part.statistic, "scale": part.scale}
            if isinstance(ev, stats.SignCount):
                record |= {"test": "sign", "n": ev.n, "median": ev.median, "above": ev.above, "ties": ev.ties,
                           "below": ev.below}
            elif ev is not None:
                record |= {"test": "t", "n": ev.n, "mean": ev.mean, "low": ev.low, "high": ev.high}
            if part.rule is not None:
                holds, fails = part.p_values()
                record |= {"claim": part.rule.claim, "margin": part.rule.margin, "p_holds": holds, "p_fails": fails}
            out.append(record | {"answer": answer})
        return out


HARD = 5.0  # the range where the plain net fails in the main experiment
EASY = 1.0


def per_seed(results: dict, r: float, model: str, value: Callable[[dict], float]) -> dict[int, float]:
    """``value(run)`` of each of ``model``'s runs on range ``r``, by seed."""
    return {run["seed"]: value(run) for run in runs_of(results, r, model)}


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    """Two nets' per-seed values, on the seeds both have, in seed order."""
    seeds = sorted(a.keys() & b.keys())
    return [a[s] for s in seeds], [b[s] for s in seeds]


def decades(a: dict[int, float], b: dict[int, float]) -> stats.SignCount:
    """Two nets' grid-valued rates (seed -> rate), paired: the sign count of log10(a / b) against 0, in
    decades, to 12 digits (so that a tie on the grid is a tie, whatever the rounding of the logs)."""
    x, y = paired(a, b)
    return stats.sign_count([rounded(math.log10(p) - math.log10(q), 12) for p, q in zip(x, y, strict=True)])


def largest_rate(accuracy: dict[float, dict[int, float]], line: float) -> dict[int, float]:
    """Per seed, the largest rate of a grid (``accuracy``: rate -> seed -> test accuracy) at which a net trains
    (accuracy at least ``line``); where it trains at none, half a decade below the grid."""
    grid = sorted(accuracy)
    out = {}
    for seed in sorted(set().union(*accuracy.values())):  # the seeds that ran
        trained = [lr for lr in grid if accuracy[lr].get(seed, 0.0) >= line]
        out[seed] = max(trained) if trained else grid[0] / math.sqrt(10)
    return out


def per_budget(results: dict, read: Callable[[dict, str], tuple[str, list[Part]]]) -> tuple[str, tuple[Part, ...]]:
    """A row's measured text and parts at every budget an experiment's runs trained for (``lab.results.budgets``):
    ``read(view, budget)`` gives (text, parts) at one, the results read at that budget, or no parts where
    that budget lacks what the row compares."""
    measured, parts = [], []
    for epochs in budgets(results):
        text, found = read(at_budget(results, epochs), f"{epochs} epochs")
        if found:
            measured.append(f"{epochs} epochs: {text}")
            parts += found
    return "; ".join(measured), tuple(parts)


def minus(a: dict[int, list[float]], b: dict[int, list[float]]) -> dict[int, list[float]]:
    """Two nets' per-item scores (seed -> one score per test item), paired: per seed both have, in seed
    order, item by item, a − b."""
    return {s: [x - y for x, y in zip(a[s], b[s], strict=True)] for s in sorted(a.keys() & b.keys())}


def ratio(results: dict, r: float, model: str, baseline: str, value: Callable[[dict], float]) -> stats.Interval:
    """The paired log-ratio ``model`` / ``baseline`` of ``value`` over the seeds of range ``r``."""
    return stats.paired_log_ratio(*paired(per_seed(results, r, model, value), per_seed(results, r, baseline, value)))


def versus(results: dict, r: float, model: str, baseline: str) -> str:
    """A table cell: ``model``'s final test MSE over ``baseline``'s on range ``r``, seed by seed (the
    geometric mean of the ratios and its interval); "1" for the baseline itself or without one."""
    if model == baseline or not runs_of(results, r, baseline):
        return "1"
    return ratio(results, r, model, baseline, final_mse).ratio_text()


def bold(answer: str) -> str:
    return f"**{answer}**" if answer not in (stats.UNDECIDED, "") else answer


MARKS = {stats.HOLDS: "✓", stats.FAILS: "✗", stats.UNDECIDED: "?", "yes": "✓", "no": "✗"}  # an answer's mark
DETAILS = "docs/verdicts.md"  # the page with every row whole: what it predicts, its parts, what was measured, its rule


def part_name(record: dict) -> str:
    """A part's label, with its budget and evaluation where the label does not say them."""
    extra = [x for x in (record["budget"], record["evaluation"]) if x and x not in record["part"]]
    return ", ".join(x for x in (record["part"], *extra) if x) or "—"


def short(x: float) -> str:
    """A number in two significant digits, without an exponent where it has three digits or more."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2g}"


def estimate(record: dict) -> str:
    """A part's estimate, as its scale reads: ×ratio for a log-ratio; a difference signed where the claim
    compares it with 0 (a level, an accuracy against 0.5 say, unsigned); a grid-valued part's median; empty
    where there is none."""
    value = record.get("median") if record.get("test") == "sign" else record.get("mean")
    if value is None or not math.isfinite(value):
        return ""
    if record["scale"] == "log-ratio":
        return f"×{short(math.exp(value))}"
    if record.get("margin", 0.0) != 0.0 and record.get("claim") != "within":
        return short(value)
    return f"{'+' if value >= 0 else '-'}{short(abs(value))}"


def claim_text(record: dict) -> str:
    """What a part's rule claims of its statistic: "below ×1", "above +0.5", "within ±0.01"."""
    if "claim" not in record:
        return "a fact"
    margin = record["margin"]
    if record["scale"] == "log-ratio":
        bound = f"×{math.exp(margin):.3g}" if record["claim"] != "within" else \
            f"×{math.exp(-margin):.3g}–{math.exp(margin):.3g}"
    else:
        bound = f"±{margin:.3g}" if record["claim"] == "within" else f"{margin:+.3g}" if margin else "0"
    return f"{record['claim']} {bound}"


def summary_table(rows: list[Verdict]) -> str:
    """The README's verdict table: a line per row, its claim (linked to the row whole on ``DETAILS``), one mark
    per part with its estimate, and the page of its experiment."""
    lines = []
    for v in rows:
        marks = " ".join(f"{MARKS[r['answer']]} {estimate(r)}".strip() for r in v.records())
        lines.append((f"[{v.explanation}]({DETAILS}#{anchor(v.explanation)})", marks, v.evidence))
    return table(("explanation", "its parts: ✓ holds, ✗ does not hold, ? not decided, each with its estimate",
                  "page"), lines)


def details(rows: list[Verdict], relink: Callable[[str], str] = lambda link: link) -> str:
    """``DETAILS``' body: each row whole, under a heading of its own: what it predicts, its parts (the
    estimate and its 95% interval, the claim, the answer), what was measured and the rule. ``relink`` makes a
    row's evidence link relative to the page."""
    out = []
    for v in rows:
        parts = []
        for part, record, answer in zip(v.parts, v.records(), v.verdict_cells(), strict=True):
            ev = part.evidence
            evidence = "" if ev is None else ev.ratio_text() if part.scale == "log-ratio" else ev.text(".3g")
            parts.append((part_name(record), evidence, claim_text(record), answer))
        out += [f"### {v.explanation}", "", f"*What it predicts here:* {v.predicts}.", "",
                table(("part", "estimate [95% interval]", "the claim", "answer"), parts), "",
                f"*Measured* (95% intervals over seeds): {v.measured}.", "", f"*Rule:* {v.rule}.", "",
                f"*Where:* {relink(v.evidence)}.", ""]
    return "\n".join(out).rstrip()
