"""Which explanation of batch norm holds here? The README's verdict table, from the rows the experiments
that test an explanation declare (their record's ``verdicts``: experiments/ics, noisy, landscape, lr,
running_stats, mnist, conv, depth, scale and only_bn), in the registry's order.

Each row: the explanation, what it predicts on this task, what was measured, the rule, and the verdict
that rule gives on those numbers. Every rule is decided on paired per-seed numbers and their 95%
interval (``lab/stats.py``) and has three answers: holds, does not hold, not decided. Nothing in the table
is typed by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lab import stats
from lab.regression import final_mse, runs_of


@dataclass(frozen=True)
class Verdict:
    """One row of the README's verdict table: an explanation of batch norm, what it predicts on this
    task, what was measured, the verdict its stated rule gives, and where the evidence is."""

    explanation: str
    predicts: str
    measured: str
    rule: str  # how the verdict is decided, with its margin
    verdict: str
    evidence: str  # a Markdown link to the page that shows it (method, figures, tables)


HARD = 5.0  # the range where the plain net fails in the main experiment
EASY = 1.0


def per_seed(results: dict, r: float, model: str, value: Callable[[dict], float]) -> dict[int, float]:
    """``value(run)`` of each of ``model``'s runs on range ``r``, by seed."""
    return {run["seed"]: value(run) for run in runs_of(results, r, model)}


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    """Two nets' per-seed values, on the seeds both have, in seed order."""
    seeds = sorted(a.keys() & b.keys())
    return [a[s] for s in seeds], [b[s] for s in seeds]


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
    return f"**{answer}**" if answer != stats.UNDECIDED else answer


def verdict_table(rows: list[Verdict]) -> str:
    columns = ("explanation", "what it predicts here", "what was measured (95% interval over seeds)", "rule", "verdict",
               "evidence")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join((v.explanation, v.predicts, v.measured, v.rule, v.verdict, v.evidence)) + " |"
              for v in rows]
    return "\n".join(lines)
