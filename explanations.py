"""Which explanation of batch norm holds here? The README's verdict table, from the rows the experiments
that test an explanation declare (their record's ``verdicts``: experiments/ics, noisy, landscape, lr,
running_stats), in the registry's order.

Each row: the explanation, what it predicts on this task, what was measured, and a verdict decided
by a stated rule from those numbers. Nothing in the table is typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from results import summarize


@dataclass(frozen=True)
class Verdict:
    """One row of the README's verdict table: an explanation of batch norm, what it predicts on this
    task, what was measured, the verdict its stated rule gives, and where the evidence is."""

    explanation: str
    predicts: str
    measured: str
    verdict: str
    evidence: str  # a Markdown link to the page that shows it (method, figures, tables)


HARD = 5.0  # the range where the plain net fails in the main experiment
EASY = 1.0


def final(results: dict, r: float, model: str) -> float:
    """The mean over seeds of ``model``'s final test MSE on range ``r``."""
    return next(row["mean"] for row in summarize(results) if row["range"] == r and row["model"] == model)


def verdict_table(rows: list[Verdict]) -> str:
    lines = ["| explanation | what it predicts here | what was measured | verdict | evidence |", "|" + "---|" * 5]
    lines += ["| " + " | ".join((v.explanation, v.predicts, v.measured, v.verdict, v.evidence)) + " |" for v in rows]
    return "\n".join(lines)
