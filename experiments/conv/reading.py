"""Reading the conv results back: runs by cell and seed, each test digit's score, and the intervals the
figures, tables and verdicts show (``stats.accuracy_interval``: the seeds' and the test digits' error)."""

from __future__ import annotations

import math

from experiments.conv.training import (
    ITEMS,
    PRECISE,
    REFERENCE,
    SMALL,
    SWEEP,
    TRAINS,
    scaled_lr,
    settings_of,
    sweep_seeds,
)
from lab import stats
from lab.norms import NORMS
from lab.results import unpack_items
from lab.verdicts import decades, minus
from lab.verdicts import largest_rate as largest


def label(results: dict, model: str) -> str:
    """``model``'s name in the figures and tables (ghost BN's with its ghost batch size)."""
    ghost = f" (G = {settings_of(results).ghost_batch})" if model == "ghost" else ""
    return NORMS[model].label + ghost


BOUNDS = {"test_acc": (0.0, 1.0), "train_mode_acc": (0.0, 1.0), "precise": (0.0, 1.0), "gap": (-1.0, 1.0)}


def runs_at(results: dict, model: str, batch_size: int, lr: float | None = None, sweep: bool = False) -> list[dict]:
    """``model``'s runs at ``batch_size`` (and learning rate ``lr``; default: the batch's linearly scaled
    one), on the settings' seeds (``sweep``: the sweep's)."""
    settings = settings_of(results)
    lr = scaled_lr(settings, batch_size) if lr is None else lr
    seeds = set(sweep_seeds(settings) if sweep else settings.seeds)
    return [r for r in results["runs"] if r["model"] == model and r["batch_size"] == batch_size
            and math.isclose(r["lr"], lr) and r["seed"] in seeds and r["epochs"] == settings.epochs]


def per_seed(results: dict, model: str, batch_size: int, lr: float | None = None, key: str = "test_acc",
             sweep: bool = False) -> dict[int, float]:
    """``key`` of ``model``'s runs (``runs_at``), by seed; train − test: ``key="gap"``."""
    value = (lambda r: r["train_acc"] - r["test_acc"]) if key == "gap" else (lambda r: r[key])
    return {r["seed"]: value(r) for r in runs_at(results, model, batch_size, lr, sweep)}


def scores(results: dict, model: str, batch_size: int, key: str = "test_acc", lr: float | None = None,
           sweep: bool = False) -> dict[int, list[float]]:
    """Per seed, each test digit's score in ``key``: 1 right, 0 wrong (in eval mode, in training mode, or
    ``"precise"``: in eval mode on precise statistics, which for a norm without running estimates is its
    eval mode); for the gap, the training accuracy minus that (their mean over digits is the seed's gap)."""
    out = {}
    for r in runs_at(results, model, batch_size, lr, sweep):
        right = unpack_items(r[PRECISE if key == "precise" else ITEMS.get(key, "test_items")])
        out[r["seed"]] = [r["train_acc"] - c for c in right] if key == "gap" else [float(c) for c in right]
    return out


def sizes(results: dict, model: str) -> list[int]:
    """The batch sizes ``model`` trained at with the linearly scaled rate (at the budget read)."""
    settings = settings_of(results)
    return sorted({r["batch_size"] for r in results["runs"] if r["model"] == model and r["epochs"] == settings.epochs
                   and math.isclose(r["lr"], scaled_lr(settings, r["batch_size"]))})


def grid_sizes(results: dict) -> list[int]:
    """Every batch size a net trained at with the linearly scaled rate."""
    return sorted({size for model in models(results) for size in sizes(results, model)})


def models(results: dict) -> list[str]:
    """The norms trained at the budget read."""
    epochs = settings_of(results).epochs
    return [m for m in NORMS if any(r["model"] == m and r["epochs"] == epochs for r in results["runs"])]


def interval(results: dict, model: str, batch_size: int, key: str = "test_acc", lr: float | None = None,
             sweep: bool = False) -> stats.Interval:
    """The mean of ``key`` over seeds, its interval counting the seeds' and the test digits' sampling error
    (``stats.accuracy_interval``)."""
    return stats.accuracy_interval(list(scores(results, model, batch_size, key, lr, sweep).values()), BOUNDS[key])


def difference(results: dict, a: tuple[str, int], b: tuple[str, int], key: str = "test_acc",
               key_b: str | None = None, lr: float | None = None, sweep: bool = False) -> stats.Interval:
    """``key`` of (model, batch size) ``a`` minus ``key_b`` (default: ``key``) of ``b`` (both at rate ``lr``,
    default their batch's; ``sweep``: on the sweep's seeds), seed by seed and digit by digit: the mean and
    its 95% interval (``stats.accuracy_interval``)."""
    keys = (key, key_b or key)
    pairs = minus(scores(results, *a, key=keys[0], lr=lr, sweep=sweep),
                  scores(results, *b, key=keys[1], lr=lr, sweep=sweep))
    return stats.accuracy_interval(list(pairs.values()), (-2.0, 2.0) if keys == ("gap", "gap") else (-1.0, 1.0))


def fall(results: dict, model: str, key: str = "test_acc") -> dict[int, list[float]]:
    """Per seed and test digit, ``model``'s score in ``key`` at ``SMALL`` minus that at ``REFERENCE``."""
    return minus(scores(results, model, SMALL, key), scores(results, model, REFERENCE, key))


def drop(results: dict, model: str, key: str = "test_acc") -> stats.Interval:
    """``model``'s test accuracy (``key``) at ``SMALL`` minus at ``REFERENCE``, over seeds and test digits."""
    return stats.accuracy_interval(list(fall(results, model, key).values()), (-1.0, 1.0))


def drop_beyond(results: dict, model: str, baseline: str, key: str = "test_acc") -> stats.Interval:
    """``model``'s drop minus ``baseline``'s, seed by seed and digit by digit."""
    return stats.accuracy_interval(list(minus(fall(results, model, key), fall(results, baseline, key)).values()),
                                   (-2.0, 2.0))


def sweep_rates(results: dict, models: tuple[str, ...] = SWEEP) -> list[float]:
    """The rates at which ``models`` trained at the base batch size (at the budget read): the sweep's, or
    (``(HELD,)``) those of MyBN2d with its filters' norms held."""
    settings = settings_of(results)
    return sorted({r["lr"] for r in results["runs"] if r["batch_size"] == settings.base_batch and r["model"] in models
                   and r["epochs"] == settings.epochs})


def largest_rate(results: dict, model: str) -> dict[int, float]:
    """Per seed, the largest rate of the sweep at which ``model`` trains (``TRAINS``); where none does,
    half a decade below the sweep."""
    base = settings_of(results).base_batch
    return largest({lr: per_seed(results, model, base, lr, sweep=True) for lr in sweep_rates(results)}, TRAINS)


def wider_rates(results: dict) -> stats.SignCount:
    """log10 of MyBN2d's largest training rate over the plain net's, seed by seed (decades), against 0."""
    return decades(largest_rate(results, "my_bn"), largest_rate(results, "plain"))


def mode_gap(results: dict, model: str, batch_size: int) -> stats.Interval:
    """Training-mode minus eval-mode test accuracy, seed by seed."""
    return difference(results, (model, batch_size), (model, batch_size), "train_mode_acc", "test_acc")
