"""The conv net's rows of the verdict table."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from experiments.conv.reading import (
    difference,
    drop,
    drop_beyond,
    interval,
    sizes,
    sweep_rates,
    wider_rates,
)
from experiments.conv.training import HELD, NONIID, REFERENCE, SMALL, TRAINS, settings_of, sweep_seeds
from lab import stats
from lab.verdicts import Part, Verdict, per_budget

FALLS = stats.Rule(0.0, "below")  # accuracy at SMALL minus at REFERENCE; and that of MyBN2d minus GroupNorm's
HIGHER = stats.Rule(0.0, "above")  # accuracy, one layer minus the other
LESS_OVERFITTING = stats.Rule(0.0, "below")  # train − test accuracy, ghost minus MyBN2d
WIDER = stats.Rule(0.0, "above")  # decades, MyBN2d's largest training rate over the plain net's
COSTS = stats.Rule(0.0, "above")  # test accuracy at a large rate, MyBN2d minus MyBN2d with its filters' norms held
GONE = stats.Rule(TRAINS, "below")  # test accuracy of MyBN2d with its filters' norms held, where the plain net fails
RULES = {"holding the norm costs accuracy": COSTS, "holding the norm, no training": GONE,
         "batch norm falls at small batches": FALLS, "more than GroupNorm": FALLS, "renorm higher": HIGHER,
         "ghost higher": HIGHER, "ghost over-fits less": LESS_OVERFITTING, "larger rates with MyBN2d": WIDER}
PAGE = "[conv](docs/conv.md)"
EVALUATIONS = {"running averages": "test_acc", "precise statistics": "precise"}  # eval mode on which statistics
ON = ("on both: eval mode with the running averages and with precise statistics (recomputed over the training "
      "set with the final weights; Wu & Johnson 2021), each a part")


def has(results: dict, model: str, *batch_sizes: int) -> bool:
    return set(batch_sizes) <= set(sizes(results, model))


class Reading(NamedTuple):
    """One part a row reads on each evaluation: its name and its evidence's format in the measured text, and
    the part's label, statistic, evidence and rule."""

    name: str
    fmt: str
    label: str
    statistic: str
    evidence: stats.Interval
    rule: stats.Rule


def on_each_evaluation(budget: str, read: Callable[[str], list[Reading]], sep: str = ", ") -> tuple[str, list[Part]]:
    """A row's measured text and parts at one budget, on each evaluation of ``EVALUATIONS``: ``read(key)`` gives
    the readings on the statistics ``key`` names, each part labelled "label (evaluation, budget)"; the
    evaluations' texts joined by ``sep``."""
    measured, parts = [], []
    for evaluation, key in EVALUATIONS.items():
        readings = read(key)
        measured.append(f"{evaluation}: " + ", ".join(f"{r.name} {r.evidence.text(r.fmt)}" for r in readings))
        parts += [Part(f"{r.label} ({evaluation}, {budget})", r.statistic, r.evidence, r.rule, budget, evaluation)
                  for r in readings]
    return sep.join(measured), parts


def needs_the_batch(results: dict) -> Verdict:
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not all(has(view, m, SMALL, REFERENCE) for m in ("my_bn", "group_norm")):
            return "", []
        return on_each_evaluation(budget, lambda key: [
            Reading("MyBN2d", "+.3f", "falls", f"MyBN2d's test accuracy, batch {SMALL} − batch {REFERENCE}",
                    drop(view, "my_bn", key), FALLS),
            Reading("MyBN2d − GroupNorm", "+.3f", "more than GroupNorm's", "that, MyBN2d − GroupNorm",
                    drop_beyond(view, "my_bn", "group_norm", key), FALLS)])

    measured, parts = per_budget(results, read)
    rule = (f"per seed, MyBN2d's test accuracy at batch {SMALL} minus at batch {REFERENCE} (falls), and that "
            f"minus GroupNorm's own change (more than GroupNorm); each holds where its interval lies below 0, does "
            f"not hold where it lies above, else not decided; {ON}; at each budget "
            f"({len(settings_of(results).seeds)} seeds)")
    return Verdict("Batch norm needs the batch (Wu & He 2018)",
                   f"on the conv net, MyBN2d's test accuracy falls from batch {REFERENCE} to {SMALL}, and GroupNorm's "
                   "does not as much", f"test accuracy, batch {SMALL} − batch {REFERENCE}: " + measured, rule, parts,
                   PAGE)


def renorm_fixes(results: dict) -> Verdict:
    """Whether Batch Renorm tests better at small batches. That it computes in training what it computes in
    inference is its construction (r and d), which the tests check, not a verdict: it could not fail."""
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not all(has(view, m, SMALL, REFERENCE) for m in ("my_bn", "renorm")):
            return "", []
        return on_each_evaluation(budget, lambda key: [
            Reading(f"batch {bs}", "+.3f", f"higher at batch {bs}", f"test accuracy at batch {bs}, Batch Renorm − "
                    "MyBN2d", difference(view, ("renorm", bs), ("my_bn", bs), key), HIGHER)
            for bs in (SMALL, REFERENCE)])

    measured, parts = per_budget(results, read)
    rule = (f"per seed, Batch Renorm's test accuracy minus MyBN2d's at batch {SMALL} (batch {REFERENCE} beside it); "
            f"holds where the interval lies above 0, does not hold where it lies below, else not decided; {ON}; at "
            "each budget")
    return Verdict("Batch Renormalization fixes small batches (Ioffe 2017)",
                   f"at batch {SMALL}, Batch Renorm tests better than MyBN2d",
                   "test accuracy, Batch Renorm − MyBN2d: " + measured, rule, parts, PAGE)


def renorm_noniid(results: dict) -> Verdict:
    """Ioffe 2017's second experiment: on batches each drawn from few classes, MyBN2d's eval mode should
    break (its accuracy fall from that on i.i.d. batches) and Batch Renorm's should not as much (it tests
    better than MyBN2d there)."""
    settings = settings_of(results)
    base, (bn, renorm), k = settings.base_batch, NONIID, settings.noniid_classes

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not all(has(view, m, base) for m in (bn, renorm, "my_bn")):
            return "", []
        return on_each_evaluation(budget, lambda key: [
            Reading("MyBN2d, non-i.i.d. − i.i.d.", "+.3f", "MyBN2d falls", f"MyBN2d's test accuracy at batch {base}, "
                    "non-i.i.d. − i.i.d. batches", difference(view, (bn, base), ("my_bn", base), key, sweep=True),
                    FALLS),
            Reading("Batch Renorm − MyBN2d", "+.3f", "Batch Renorm higher", f"test accuracy at batch {base} on "
                    "non-i.i.d. batches, Batch Renorm − MyBN2d",
                    difference(view, (renorm, base), (bn, base), key, sweep=True), HIGHER)], sep="; ")

    measured, parts = per_budget(results, read)
    rule = (f"at batch {base}, per seed ({len(sweep_seeds(settings))}, the sweep's), trained on non-i.i.d. batches "
            f"(each from {k} classes, {base // max(k, 1)} digits of each): MyBN2d's test accuracy minus its own on "
            "i.i.d. batches (falls: holds where the interval lies below 0) and Batch Renorm's minus MyBN2d's (higher: "
            "holds where it lies above 0); each does not hold where its interval lies on the other side, else not "
            f"decided; {ON}; at each budget")
    return Verdict("Batch Renormalization fixes non-i.i.d. batches (Ioffe 2017)",
                   f"on batches each drawn from {k} classes, MyBN2d tests worse than on i.i.d. batches, and Batch "
                   "Renorm tests better than MyBN2d", "test accuracy: " + measured, rule, parts, PAGE)


def ghost_regularises(results: dict) -> Verdict:
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        measured, parts = [], []
        for bs in sorted(set(sizes(view, "ghost")) & set(sizes(view, "my_bn"))):
            acc = {e: difference(view, ("ghost", bs), ("my_bn", bs), key) for e, key in EVALUATIONS.items()}
            gap = difference(view, ("ghost", bs), ("my_bn", bs), "gap")
            accuracies = ", ".join(f"{e} {ci.text('+.3f')}" for e, ci in acc.items())
            measured.append(f"batch {bs}: test accuracy {accuracies}, train − test {gap.text('+.3f')}")
            parts += [Part(f"batch {bs}: higher ({e}, {budget})", f"test accuracy at batch {bs}, ghost BN − MyBN2d",
                           ci, HIGHER, budget, e) for e, ci in acc.items()]
            parts.append(Part(f"batch {bs}: over-fits less ({budget})", f"train − test accuracy at batch {bs}, ghost "
                              "BN − MyBN2d", gap, LESS_OVERFITTING, budget, "running averages"))
        return ", ".join(measured), parts

    measured, parts = per_budget(results, read)
    rule = (f"per seed, ghost BN (ghost batches of {settings_of(results).ghost_batch}) minus MyBN2d at the same "
            f"batch: its test accuracy (holds above 0; {ON}) and its train − test accuracy (holds below 0; running "
            "averages); the opposite side does not hold, else not decided; at each budget")
    return Verdict("Ghost batches regularise (Hoffer et al. 2017)",
                   "in large batches, batch norm over small ghost batches tests better and over-fits less",
                   "ghost BN − MyBN2d: " + measured, rule, parts, PAGE)


def larger_rates(results: dict) -> Verdict:
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if len(sweep_rates(view)) < 2:
            return "", []
        count = wider_rates(view)
        return count.text(".2g"), [Part(budget, "decades, MyBN2d's largest training rate over the plain net's", count,
                                        WIDER, budget)]

    measured, parts = per_budget(results, read)
    rates, base = sweep_rates(results), settings_of(results).base_batch
    rule = (f"per seed, log10 of MyBN2d's largest rate that trains (test accuracy ≥ {TRAINS:g}) over the plain net's, "
            f"in decades (rates {', '.join(f'{lr:g}' for lr in rates)} at batch {base}); a sign test of the seeds "
            "above 0, a tie counting against: holds where they are significantly many, does not hold where the "
            "seeds not above 0 are, else not decided; at each budget")
    return Verdict("Batch norm allows larger learning rates on a conv net (Bjorck et al. 2018)",
                   "MyBN2d's conv net still trains at learning rates where the plain one no longer does",
                   f"decades, MyBN2d − plain: {measured}", rule, parts, PAGE)


def self_tuning(results: dict) -> Verdict:
    """Whether the filters' growing norm, which tunes the effective rate η/‖w‖² down (Arora, Li & Lyu
    2019), is what lets MyBN2d train at rates where the plain net does not: the same net with each
    filter's norm held at its initial value (``training.HeldNorms``) at the sweep's rates where MyBN2d
    trains and the plain net does not. If the mechanism is what carries MyBN2d there, holding the norm
    costs accuracy at the largest such rate and leaves no training at the smallest. That the norm grows,
    and so lowers the effective rate, is an identity (⟨w, ∇w⟩ = 0; the scale experiment's tests): not a
    verdict; whether it matters is."""
    settings = settings_of(results)
    base = settings.base_batch

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        rates = sweep_rates(view, (HELD,))
        if not rates or not set(rates) <= set(sweep_rates(view)):
            return "", []
        low, high = rates[0], rates[-1]
        return on_each_evaluation(budget, lambda key: [
            Reading(f"MyBN2d − norms held at lr {high:g}", "+.3f", f"costs accuracy at lr {high:g}",
                    f"test accuracy at lr {high:g}, MyBN2d − MyBN2d with its filters' norms held",
                    difference(view, ("my_bn", base), (HELD, base), key, lr=high, sweep=True), COSTS),
            Reading(f"norms held at lr {low:g}", ".3f", f"no longer trains at lr {low:g}", f"test accuracy at lr "
                    f"{low:g} of MyBN2d with its filters' norms held",
                    interval(view, HELD, base, key, lr=low, sweep=True), GONE)], sep="; ")

    measured, parts = per_budget(results, read)
    rule = (f"at batch {base}, per seed ({len(sweep_seeds(settings))}, the sweep's), MyBN2d with every filter scaled "
            "back to its initial norm after each step, at the largest and the smallest of the sweep's rates where it "
            "trained: at the largest, MyBN2d's test accuracy minus the held net's (costs accuracy: holds where the "
            "interval lies above 0); at the smallest, its test accuracy (no longer trains: holds where the interval "
            f"lies below {TRAINS:g}, the sweep's line for training); each does not hold where its interval lies on the "
            f"other side, else not decided; {ON}; at each budget")
    return Verdict("The self-tuning effective rate is what lets batch norm take large rates (Arora, Li & Lyu 2019)",
                   "with each filter's norm held at its start (its effective rate cannot tune itself down), MyBN2d's "
                   "conv net loses the rates at which it trains and the plain net does not",
                   measured, rule, parts, PAGE)


def verdicts(results: dict) -> list[Verdict]:
    """The rows its grid can decide: the preset's grid decides all six (a grid of your own may lack the
    batch sizes or the nets a row compares)."""
    rows = [row(results) for row in (needs_the_batch, renorm_fixes, renorm_noniid, ghost_regularises, larger_rates,
                                     self_tuning)]
    return [row for row in rows if row.parts]
