"""The residual experiment's rows of the verdict table."""

from __future__ import annotations

from experiments.residual.reading import (
    EVALUATIONS,
    difference,
    falls_as,
    full_grid,
    has,
    init_depths,
    interval,
    larger,
    last_ratio,
)
from experiments.residual.training import TRAINS, settings_of
from lab import stats
from lab.verdicts import Part, Verdict, per_budget

AS_ONE_OVER_L = stats.Rule(0.2, "within")  # the slope of log(branch share) against log(l + 1), plus 1: within 0.2 of
# −1 (a share falling as l^−0.8 to l^−1.2; no norm's stays near 0, the normaliser-free net's bends from 0 to −1)
SMALLER = stats.Rule(0.0, "below")  # log of the branch share at the last block, MyBN2d over no norm's
TRAINS_RULE = stats.Rule(TRAINS, "above")  # test accuracy: the net trains
NO_TRAINING = stats.Rule(TRAINS, "below")  # test accuracy: the net does not train
LOWER = stats.Rule(0.0, "below")  # test accuracy, without skips minus with them
LARGER = stats.Rule(0.0, "above")  # decades, one net's largest training rate over another's
RULES = {"falls as 1/l": AS_ONE_OVER_L, "smaller share": SMALLER, "trains": TRAINS_RULE, "no training": NO_TRAINING,
         "lower without skips": LOWER, "larger rates": LARGER}
PAGE = "[residual](docs/residual.md)"
AT_INIT = "at initialisation"


def identity_bias(results: dict) -> Verdict:
    settings = settings_of(results)
    depths = [d for d in settings.init_depths if all(d in init_depths(results, v) for v in ("my_bn", "plain"))]
    parts, measured = [], ""
    if depths:  # the deepest measured
        depth = depths[-1]
        slope, share = falls_as(results, "my_bn", depth), last_ratio(results, "my_bn", "plain", depth)
        measured = (f"{depth} blocks: MyBN2d's slope of log(branch share) on log(l + 1), plus 1, "
                    f"{slope.text('+.3f')}; its share at the last block over the He net's {share.ratio_text()}")
        parts = [Part(f"falls as 1/ℓ ({depth} blocks)", "slope of log(MyBN2d's branch share) against log(l + 1), "
                      "plus 1", slope, AS_ONE_OVER_L, AT_INIT),
                 Part(f"below the He net's ({depth} blocks)", "log of the branch share at the last block, MyBN2d "
                      "over no norm", share, SMALLER, AT_INIT, scale="log-ratio")]
    rule = (f"per seed, at initialisation ({len(settings.seeds)} seeds, {settings.init_batch} training digits each, "
            "training mode), each block's branch variance over the stream's, by block l: the slope of its log "
            f"against log(l + 1), plus 1, holds within {AS_ONE_OVER_L.margin:g} (equivalence: two one-sided tests) "
            "and does not hold where shown beyond; and the log of MyBN2d's share at the last block over the He "
            "net's: holds below 0, does not hold above; else not decided; at the deepest depth measured")
    return Verdict("Batch norm biases residual blocks towards the identity at initialisation (De & Smith 2020)",
                   "in a pre-activation residual net with MyBN2d, the branch's share of the stream's variance falls as "
                   "1/ℓ with the block ℓ, far below the He net's",
                   measured, rule, tuple(parts), PAGE)


def trains_without(results: dict) -> Verdict:
    settings = settings_of(results)
    depth, lr = max(settings.depths), settings.common_rate

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        shown = [v for v in ("skipinit", "fixup", "plain", "my_bn") if has(view, v, depth, lr)]
        if not {"skipinit", "fixup"} <= set(shown):
            return "", []
        names = {"skipinit": "SkipInit", "fixup": "Fixup", "plain": "no norm (He)", "my_bn": "MyBN2d"}
        text = ", ".join(f"{names[v]} {interval(view, v, depth, lr).text('.3f')}" for v in shown)
        return text, [Part(f"{names[v]} trains ({budget})", f"{names[v]}'s test accuracy, {depth} blocks, lr {lr:g}",
                           interval(view, v, depth, lr), TRAINS_RULE, budget) for v in ("skipinit", "fixup")]

    measured, parts = per_budget(results, read)
    rule = (f"per seed, the test accuracy of the {depth}-block net at lr {lr:g} (over seeds and test digits): holds "
            f"where its interval lies above {TRAINS:g} (the line for training), does not hold where it lies below, "
            "else not decided; at each budget")
    return Verdict("SkipInit and Fixup train deep residual nets without normalisation (De & Smith 2020; Zhang, "
                   "Dauphin & Ma 2019)",
                   f"at {depth} blocks, where the He net without a norm does not train, SkipInit's and Fixup's do",
                   f"test accuracy at {depth} blocks, lr {lr:g}: " + measured, rule, parts, PAGE)


def larger_than_skipinit(results: dict) -> Verdict:
    settings = settings_of(results)

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        measured, parts = [], []
        for depth in settings.depths:
            if not full_grid(view, ("my_bn", "skipinit"), depth):
                continue
            counts = {e: larger(view, "my_bn", "skipinit", depth, key) for e, key in EVALUATIONS.items()}
            measured.append(f"{depth} blocks: " + ", ".join(f"{e} {c.text('.2g')}" for e, c in counts.items()))
            parts += [Part(f"{depth} blocks ({e}, {budget})", f"decades, MyBN2d's largest training rate over "
                           f"SkipInit's, {depth} blocks", c, LARGER, budget, e) for e, c in counts.items()]
        return "; ".join(measured), parts

    measured, parts = per_budget(results, read)
    rule = (f"per seed, log10 of MyBN2d's largest rate that trains (test accuracy ≥ {TRAINS:g}) over SkipInit's, in "
            f"decades (rates {', '.join(f'{lr:g}' for lr in sorted(settings.rates))}); a sign test of the seeds above "
            "0, a tie counting against: holds where they are significantly many, does not hold where the seeds not "
            "above 0 are, else not decided; MyBN2d on its running averages and on precise statistics, each a part; "
            "at each depth and budget")
    return Verdict("Batch norm trains at larger learning rates than SkipInit (De & Smith 2020)",
                   "MyBN2d's residual net still trains at rates where SkipInit's no longer does",
                   "decades, MyBN2d over SkipInit: " + measured, rule, parts, PAGE)


def hard_without_skips(results: dict) -> Verdict:
    settings = settings_of(results)
    depth, lr = max(settings.depths), settings.common_rate

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not (has(view, "my_bn_noskip", depth, lr) and has(view, "my_bn", depth, lr)):
            return "", []
        measured, parts = [], []
        for e, key in EVALUATIONS.items():
            acc, gap = interval(view, "my_bn_noskip", depth, lr, key), difference(view, "my_bn_noskip", "my_bn",
                                                                                   depth, lr, key)
            measured.append(f"{e}: without skips {acc.text('.3f')}, minus with them {gap.text('+.3f')}")
            parts += [Part(f"does not train ({e}, {budget})", f"test accuracy of MyBN2d without skips, {depth} blocks, "
                           f"lr {lr:g}", acc, NO_TRAINING, budget, e),
                      Part(f"below the residual net ({e}, {budget})", f"test accuracy at {depth} blocks, lr {lr:g}, "
                           "MyBN2d without skips − with them", gap, LOWER, budget, e)]
        if full_grid(view, ("my_bn", "my_bn_noskip"), depth):
            count = larger(view, "my_bn", "my_bn_noskip", depth)
            measured.append(f"decades of the largest training rate, with skips over without {count.text('.2g')}")
            parts.append(Part(f"smaller largest rate ({budget})", f"decades, the largest training rate of MyBN2d "
                              f"with skips over without, {depth} blocks", count, LARGER, budget, "running averages"))
        return "; ".join(measured), parts

    measured, parts = per_budget(results, read)
    rule = (f"at {depth} blocks (each of two convolutions), per seed: MyBN2d without skips, its test accuracy at lr "
            f"{lr:g} (does not train: holds where the interval lies below {TRAINS:g}) and that minus the residual "
            "MyBN2d's (holds where the interval lies below 0), each on both evaluations; where it trained at every "
            "rate, the decades of the residual net's largest training rate over its own (a sign test above 0); each "
            "does not hold where the evidence lies on the other side, else not decided; at each budget")
    return Verdict("Deep batch-normalised nets without skip connections are hard to train (Yang et al. 2019)",
                   f"at {depth} blocks without skips, MyBN2d's conv net does not train at a rate where its residual "
                   "twin does",
                   f"at {depth} blocks, lr {lr:g}: " + measured, rule, parts, PAGE)


def verdicts(results: dict) -> list[Verdict]:
    """The rows its results can decide (a grid of your own may lack the nets a row compares)."""
    rows = [row(results) for row in (identity_bias, trains_without, larger_than_skipinit, hard_without_skips)]
    return [row for row in rows if row.parts]
