"""Reading the residual results back: the measurements at initialisation by block, the runs by cell and seed,
each test digit's score, and the intervals and counts the figures, tables and verdicts show."""

from __future__ import annotations

import math

from experiments.residual.training import ITEMS, PRECISE, TRAINS, settings_of
from lab import stats
from lab.results import unpack_items
from lab.verdicts import decades, minus
from lab.verdicts import largest_rate as largest

EVALUATIONS = {"running averages": "test_acc", "precise statistics": "precise"}  # eval mode on which statistics


# ---------------------------------------------------------------------------------------------- at initialisation


def at_init(results: dict, variant: str, depth: int, key: str) -> dict[int, list[float]]:
    """Per seed, ``key`` ("stream_sq", "stream_var" or "ratio") of ``variant``'s net of ``depth`` blocks, by block."""
    return {r["seed"]: r[key] for r in results["initialisation"].get(str(depth), []) if r["model"] == variant}


def init_depths(results: dict, variant: str) -> list[int]:
    return sorted(int(d) for d, records in results["initialisation"].items() if any(r["model"] == variant
                                                                                    for r in records))


def slope(ratio: list[float]) -> float:
    """The least-squares slope of log(ratio_l) against log(l + 1) over the blocks l (0-based): −1 where the branch's
    share of the stream's variance falls as 1/(l + 1). (``math.fsum``: the same bits on any CPU.)"""
    x = [math.log(b) for b in range(1, len(ratio) + 1)]
    y = [math.log(r) for r in ratio]
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    return math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / math.fsum((a - mx) ** 2 for a in x)


def falls_as(results: dict, variant: str, depth: int) -> stats.Interval:
    """Per seed, the slope of the branch's share (``slope``) plus 1: 0 where it falls exactly as 1/(l + 1)."""
    return stats.t_interval([slope(r) + 1 for r in at_init(results, variant, depth, "ratio").values()])


def last_ratio(results: dict, a: str, b: str, depth: int) -> stats.Interval:
    """The log of ``a``'s branch share at the last block over ``b``'s, seed by seed."""
    ra, rb = (at_init(results, v, depth, "ratio") for v in (a, b))
    seeds = sorted(ra.keys() & rb.keys())
    return stats.paired_log_ratio([ra[s][-1] for s in seeds], [rb[s][-1] for s in seeds])


# ---------------------------------------------------------------------------------------------- under training


def runs_at(results: dict, variant: str, depth: int, lr: float) -> list[dict]:
    """``variant``'s runs at ``depth`` blocks and rate ``lr``, at the budget read."""
    epochs = settings_of(results).epochs
    return [r for r in results["runs"] if (r["model"], r["depth"], r["epochs"]) == (variant, depth, epochs)
            and math.isclose(r["lr"], lr)]


def has(results: dict, variant: str, depth: int, lr: float) -> bool:
    return bool(runs_at(results, variant, depth, lr))


def rates(results: dict, variant: str, depth: int) -> list[float]:
    """The rates ``variant`` trained at, at ``depth`` blocks and the budget read."""
    epochs = settings_of(results).epochs
    return sorted({r["lr"] for r in results["runs"] if (r["model"], r["depth"], r["epochs"]) == (variant, depth,
                                                                                                  epochs)})


def scores(results: dict, variant: str, depth: int, lr: float, key: str = "test_acc") -> dict[int, list[float]]:
    """Per seed, each test digit's score: 1 right, 0 wrong, in eval mode (``"test_acc"``) or on precise statistics
    (``"precise"``; a net without batch norm: its eval mode)."""
    return {r["seed"]: [float(c) for c in unpack_items(r[PRECISE if key == "precise" else ITEMS])]
            for r in runs_at(results, variant, depth, lr)}


def accuracy(results: dict, variant: str, depth: int, lr: float, key: str = "test_acc") -> dict[int, float]:
    """Per seed, the test accuracy (``key``: as ``scores``)."""
    return {s: sum(v) / len(v) for s, v in scores(results, variant, depth, lr, key).items()}


def interval(results: dict, variant: str, depth: int, lr: float, key: str = "test_acc") -> stats.Interval:
    """The test accuracy over seeds, its interval counting the seeds' and the test digits' error."""
    return stats.accuracy_interval(list(scores(results, variant, depth, lr, key).values()))


def difference(results: dict, a: str, b: str, depth: int, lr: float, key: str = "test_acc") -> stats.Interval:
    """``a``'s test accuracy minus ``b``'s, seed by seed and digit by digit."""
    pairs = minus(scores(results, a, depth, lr, key), scores(results, b, depth, lr, key))
    return stats.accuracy_interval(list(pairs.values()), (-1.0, 1.0))


def largest_rate(results: dict, variant: str, depth: int, key: str = "test_acc") -> dict[int, float]:
    """Per seed, the largest rate at which ``variant`` trains (test accuracy at least ``TRAINS``); where none
    does, half a decade below the rates."""
    return largest({lr: accuracy(results, variant, depth, lr, key) for lr in rates(results, variant, depth)}, TRAINS)


def larger(results: dict, a: str, b: str, depth: int, key: str = "test_acc") -> stats.SignCount:
    """log10 of ``a``'s largest training rate over ``b``'s, seed by seed (decades), against 0."""
    return decades(largest_rate(results, a, depth, key), largest_rate(results, b, depth, key))


def full_grid(results: dict, variants: tuple[str, ...], depth: int) -> bool:
    """Whether each of ``variants`` trained at every rate of the settings at ``depth`` (at the budget read)."""
    return all(rates(results, v, depth) == sorted(settings_of(results).rates) for v in variants)
