"""The conv net's rows of the verdict table."""

from __future__ import annotations

from experiments.conv.reading import difference, fall, models, sizes, sweep_rates, wider_rates
from experiments.conv.training import REFERENCE, SMALL, TRAINS, settings_of
from lab import stats
from lab.verdicts import Part, Verdict, minus

FALLS = stats.Rule(0.0, "below")  # accuracy at SMALL minus at REFERENCE; and that of MyBN2d minus GroupNorm's
HIGHER = stats.Rule(0.0, "above")  # accuracy, one layer minus the other
LESS_OVERFITTING = stats.Rule(0.0, "below")  # train − test accuracy, ghost minus MyBN2d
WIDER = stats.Rule(0.0, "above")  # decades, MyBN2d's largest training rate over the plain net's
RULES = {"batch norm falls at small batches": FALLS, "more than GroupNorm": FALLS, "renorm higher": HIGHER,
         "ghost higher": HIGHER, "ghost over-fits less": LESS_OVERFITTING, "larger rates with MyBN2d": WIDER}
PAGE = "[conv](docs/conv.md)"


def needs_the_batch(results: dict) -> Verdict:
    falls = stats.accuracy_interval(list(fall(results, "my_bn").values()), (-1.0, 1.0))
    more = stats.accuracy_interval(list(minus(fall(results, "my_bn"), fall(results, "group_norm")).values()),
                                   (-2.0, 2.0))
    rule = (f"per seed, MyBN2d's test accuracy at batch {SMALL} minus at batch {REFERENCE} (falls), and that "
            f"minus GroupNorm's own change (more than GroupNorm); each holds where its interval lies below 0, does "
            f"not hold where it lies above, else not decided ({len(settings_of(results).seeds)} seeds)")
    parts = (Part("falls", f"MyBN2d's test accuracy, batch {SMALL} − batch {REFERENCE}", falls, FALLS),
             Part("more than GroupNorm's", "that, MyBN2d − GroupNorm", more, FALLS))
    return Verdict("Batch norm needs the batch (Wu & He 2018)",
                   f"on the conv net, MyBN2d's test accuracy falls from batch {REFERENCE} to {SMALL}, and GroupNorm's "
                   "does not as much",
                   f"test accuracy, batch {SMALL} − batch {REFERENCE}: MyBN2d {falls.text('+.3f')}; MyBN2d − "
                   f"GroupNorm of that {more.text('+.3f')}", rule, parts, PAGE)


def renorm_fixes(results: dict) -> Verdict:
    """Whether Batch Renorm tests better at small batches. That it computes in training what it computes in
    inference is its construction (r and d), which the tests check, not a verdict: it could not fail."""
    higher = {bs: difference(results, ("renorm", bs), ("my_bn", bs)) for bs in (SMALL, REFERENCE)}
    rule = (f"per seed, Batch Renorm's test accuracy minus MyBN2d's at batch {SMALL} (batch {REFERENCE} beside it); "
            "holds where the interval lies above 0, does not hold where it lies below, else not decided")
    measured = [f"batch {bs}: Batch Renorm − MyBN2d {ci.text('+.3f')}" for bs, ci in higher.items()]
    parts = tuple(Part(f"higher at batch {bs}", f"test accuracy at batch {bs}, Batch Renorm − MyBN2d", ci, HIGHER)
                  for bs, ci in higher.items())
    return Verdict("Batch Renormalization fixes small batches (Ioffe 2017)",
                   f"at batch {SMALL}, Batch Renorm tests better than MyBN2d",
                   "test accuracy, " + "; ".join(measured), rule, parts, PAGE)


def ghost_regularises(results: dict) -> Verdict:
    measured, parts, ghost = [], [], settings_of(results).ghost_batch
    for bs in sorted(set(sizes(results, "ghost")) & set(sizes(results, "my_bn"))):
        acc, gap = (difference(results, ("ghost", bs), ("my_bn", bs), key) for key in ("test_acc", "gap"))
        measured.append(f"batch {bs}: test accuracy {acc.text('+.3f')}, train − test {gap.text('+.3f')}")
        parts += [Part(f"batch {bs}: higher", f"test accuracy at batch {bs}, ghost BN − MyBN2d", acc, HIGHER),
                  Part(f"batch {bs}: over-fits less", f"train − test accuracy at batch {bs}, ghost BN − MyBN2d", gap,
                       LESS_OVERFITTING)]
    rule = (f"per seed, ghost BN (ghost batches of {ghost}) minus MyBN2d at the same batch: its test accuracy "
            "(holds above 0) and its train − test accuracy (holds below 0); the opposite side does not hold, else "
            "not decided")
    return Verdict("Ghost batches regularise (Hoffer et al. 2017)",
                   "in large batches, batch norm over small ghost batches tests better and over-fits less",
                   "ghost BN − MyBN2d: " + "; ".join(measured), rule, tuple(parts), PAGE)


def larger_rates(results: dict) -> Verdict:
    count = wider_rates(results)
    rates, base = sweep_rates(results), settings_of(results).base_batch
    rule = (f"per seed, log10 of MyBN2d's largest rate that trains (test accuracy ≥ {TRAINS:g}) over the plain net's, "
            f"in decades (rates {', '.join(f'{lr:g}' for lr in rates)} at batch {base}); a sign test of the seeds "
            "above 0, a tie counting against: holds where they are significantly many, does not hold where the "
            "seeds not above 0 are, else not decided")
    return Verdict("Batch norm allows larger learning rates on a conv net (Bjorck et al. 2018)",
                   "MyBN2d's conv net still trains at learning rates where the plain one no longer does",
                   f"decades, MyBN2d − plain: {count.text('.2g')}", rule,
                   (Part("", "decades, MyBN2d's largest training rate over the plain net's", count, WIDER),), PAGE)


def verdicts(results: dict) -> list[Verdict]:
    """The rows its grid can decide: the preset's grid decides all four (a grid of your own may lack the
    batch sizes or the nets a row compares)."""
    has = {model: set(sizes(results, model)) for model in models(results)}
    rows = []
    if {SMALL, REFERENCE} <= has.get("my_bn", set()) & has.get("group_norm", set()):
        rows.append(needs_the_batch(results))
    if {SMALL, REFERENCE} <= has.get("my_bn", set()) & has.get("renorm", set()):
        rows.append(renorm_fixes(results))
    if has.get("ghost", set()) & has.get("my_bn", set()):
        rows.append(ghost_regularises(results))
    return [*rows, larger_rates(results)]
