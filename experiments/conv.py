"""conv: where batch norm lives: on a conv net of real digits, does it need the batch, and what do the
layers that replace it buy?

``lab.nets.ConvNet`` (three 3×3 convolutions of 16 channels, each followed by the norm under test
and ReLU; global average pooling; a linear classifier; He-initialised, the same weights for every norm
at a seed) on scikit-learn's 8×8 digits (``data.digits_split``: 1,297 to train on, 50 of each digit
to test on; pixels standardised by the training set's mean and std), with each norm of ``ConvSettings.norms``:
none, ``MyBN2d`` (in float64 lock-step with ``nn.BatchNorm2d``, a test: its results are PyTorch's
layer's too), GroupNorm (4 groups), LayerNorm over (C, H, W) (GroupNorm with one group) and Batch
Renormalization (``MyBatchRenorm2d``: r_max = 3, d_max = 5, the paper's warm-up in proportion).

After Wu & He 2018 ("Group Normalization", Figure 1): every norm at each of ``batch_sizes`` for 4
epochs, SGD with momentum 0.9 at lr · B / 32 (lr = 0.1) on a cosine schedule, 5 seeds, each seed's
batches the same permutations of the digits at every size and for every norm; ghost batch norm
(``MyGhostBN2d``, ghost batches of ``ghost_batch``) at ``ghost_at``; at batch 32, plain and MyBN2d at
the rates of ``lr_factors`` too (Bjorck et al. 2018). Measured per seed: the test accuracy in eval
mode and in training mode (the test set in batches of the run's size, each normalised by its own
statistics), and the training digits' accuracy. A cell's seeds train as one five-member ``ConvNet``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from experiments.record import Experiment, checked_runs
from lab import stats
from lab.data import digits_standardised
from lab.loop import cosine, fit_members, member_accuracy, steps_per_epoch
from lab.nets import ConvNet
from lab.norms import NORMS
from lab.plotting import COLOURS, interval_bars, save, subplots
from lab.results import rounded, source
from lab.settings import DTYPES, Settings, batch_int, flag, non_negative_float, positive_float, positive_int, unit_float
from lab.verdicts import Verdict, bold, paired
from lab.workers import environment, run_pool

BATCH_STATS = ("my_bn", "renorm", "ghost")  # the norms whose training mode normalises with the batch's statistics
SWEEP = ("plain", "my_bn")  # the nets of the learning-rate sweep at the base batch size
TRAINS = 0.5  # a run trains when it ends with at least this test accuracy (five times chance)
SMALL, REFERENCE = 2, 8  # "batch norm needs the batch": its accuracy at SMALL against that at REFERENCE


@dataclass
class ConvSettings(Settings):
    """The conv experiment's settings: its grid and training recipe, its preset as the defaults."""

    epochs: int = flag(4, "training epochs", type=positive_int)
    lr: float = flag(0.1, "learning rate at the base batch size: lr · B / base at batch B", type=positive_float)
    base_batch: int = flag(32, "the base batch size: whose rate lr is, and where the rate sweep runs", type=batch_int)
    momentum: float = flag(0.9, "SGD momentum", type=unit_float)
    bn_momentum: float = flag(0.1, "momentum of the batch-norm layers' running estimates", type=unit_float)
    norms: list[str] = flag(["plain", "my_bn", "group_norm", "layer_norm", "renorm"],
                            "the norms trained at every batch size", metavar="NORM",
                            choices=tuple(n for n in NORMS if n != "ghost"))
    batch_sizes: list[int] = flag([2, 8, 32, 128], "the batch sizes every norm trains at", type=batch_int, metavar="B")
    ghost_batch: int = flag(8, "ghost batch norm's ghost batch size G", type=batch_int)
    ghost_at: list[int] = flag([32, 128], "the batch sizes ghost batch norm trains at", type=batch_int, metavar="B")
    lr_factors: list[float] = flag([1.0, 3.0, 10.0, 30.0, 100.0], "the learning-rate sweep at the base batch size, "
                                   "plain and MyBN2d: lr times these", type=positive_float, metavar="F")
    r_max: float = flag(3.0, "Batch Renormalization's clip of r (the paper's)", type=positive_float)
    d_max: float = flag(5.0, "Batch Renormalization's clip of d (the paper's)", type=non_negative_float)
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {"device": ("cpu", "it runs on the CPU"),
                                                     "nproc": (1, "each cell trains in one process")}


def label(results: dict, model: str) -> str:
    """``model``'s name in the figures and tables (ghost BN's with its ghost batch size)."""
    ghost = f" (G = {settings_of(results).ghost_batch})" if model == "ghost" else ""
    return NORMS[model].label + ghost


def settings_of(results: dict) -> ConvSettings:
    """The settings its results record (an older file's missing ones: the preset's)."""
    return ConvSettings.from_record(results["config"])


def renorm_warmup(steps: int) -> tuple[int, int, int]:
    """Batch Renormalization's warm-up for a run of ``steps`` steps: the paper's (r_max = 1, d_max = 0
    for 5,000 steps, d_max = 5 by 25,000, r_max = 3 by 40,000) with its 40,000 steps put at half the run."""
    return steps // 16, steps // 2, 5 * steps // 16


def scaled_lr(settings: ConvSettings, batch_size: int, factor: float = 1.0) -> float:
    """The learning rate at ``batch_size``, the settings' lr being that at their base batch size (times
    ``factor``), to 12 digits (0.3, not 0.30000000000000004)."""
    return rounded(settings.lr * factor * batch_size / settings.base_batch, 12)


def cells(config) -> list[tuple[str, int, float]]:
    """Every (norm, batch size, learning rate) trained, the slowest (smallest batches) first so that the
    worker processes end together."""
    base = config.base_batch
    grid = [(norm, b, scaled_lr(config, b)) for norm in config.norms for b in config.batch_sizes]
    grid += [("ghost", b, scaled_lr(config, b)) for b in config.ghost_at]
    grid += [(norm, base, scaled_lr(config, base, f)) for norm in SWEEP for f in config.lr_factors]
    return sorted(dict.fromkeys(grid), key=lambda c: (c[1], c[0] != "renorm"))


def train_cell(config, cell: tuple[str, int, float]) -> list[dict]:
    """One (norm, batch size, learning rate) for every seed, as one ``ConvNet`` of one member a seed
    (each member its seed's net on its seed's batches); one run record a seed."""
    norm, batch_size, lr = cell
    x_train, y_train, x_test, y_test = digits_standardised(DTYPES[config.dtype])
    seeds = list(config.seeds)
    steps = config.epochs * steps_per_epoch(batch_size, len(x_train))
    renorm = (config.r_max, config.d_max, renorm_warmup(steps))
    net = ConvNet(norm, seeds, bn_momentum=config.bn_momentum, renorm=renorm, ghost_batch_size=config.ghost_batch,
                  mybn_backend=config.mybn_backend, dtype=DTYPES[config.dtype])
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum)
    losses = fit_members(net, opt, x_train, y_train, batch_size, config.epochs, cosine(lr, steps))
    last = torch.stack(losses[-steps // config.epochs:]).double().mean(0)  # each member's, over the last epoch
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))  # the test batches' order
    measured = {"test_acc": member_accuracy(net, x_test, y_test), "train_acc": member_accuracy(net, x_train, y_train),
                "train_mode_acc": member_accuracy(net, x_test[order], y_test[order], batch_size), "loss": last}
    return [{"model": norm, "batch_size": batch_size, "lr": lr, "seed": s,
             **{k: rounded(v[j].item()) for k, v in measured.items()}} for j, s in enumerate(seeds)]


def run(config, log=print) -> dict:
    digits_standardised(DTYPES[config.dtype])  # loaded once here, before the workers fork
    todo, runs = cells(config), []
    with run_pool(config, len(todo)) as pool_map:
        for (norm, batch_size, lr), members in zip(todo, pool_map(functools.partial(train_cell, config), todo),
                                                   strict=True):
            runs += members
            mean = sum(m["test_acc"] for m in members) / len(members)
            log(f"conv: {norm:<10} batch {batch_size:>3}  lr {lr:<7g} test accuracy {mean:.3f} (mean of "
                f"{len(members)} seeds)")
    x_train, _, x_test, _ = digits_standardised(DTYPES[config.dtype])
    return {"config": dataclasses.asdict(config), "environment": environment(config),
            "split": {"train": len(x_train), "test": len(x_test), "seed": 0,
                      "pixels": "standardised by the training set's mean and std"},
            "datasets": [], "runs": sorted(runs, key=lambda r: (r["model"], r["batch_size"], r["lr"], r["seed"]))}


def check_format(results: dict) -> None:
    """What the figures and tables read, named where it is missing (its record's ``results_format``)."""
    for i, run_ in enumerate(checked_runs(results, tuple(NORMS))):
        if not isinstance(run_.get("batch_size"), int) or not isinstance(run_.get("seed"), int):
            raise ValueError(f"runs[{i}]: needs an integer 'batch_size' and 'seed'")
        if not all(isinstance(run_.get(k), (int, float)) for k in ("lr", "test_acc", "train_acc", "train_mode_acc")):
            raise ValueError(f"runs[{i}]: needs numbers 'lr', 'test_acc', 'train_acc' and 'train_mode_acc'")


# ---------------------------------------------------------------------------------------------- reading


def per_seed(results: dict, model: str, batch_size: int, lr: float | None = None, key: str = "test_acc"
             ) -> dict[int, float]:
    """``key`` of ``model``'s runs at ``batch_size`` (and learning rate ``lr``; default: the batch's
    linearly scaled one), by seed; train − test: ``key="gap"``."""
    lr = scaled_lr(settings_of(results), batch_size) if lr is None else lr
    runs = [r for r in results["runs"] if r["model"] == model and r["batch_size"] == batch_size
            and math.isclose(r["lr"], lr)]
    value = (lambda r: r["train_acc"] - r["test_acc"]) if key == "gap" else (lambda r: r[key])
    return {r["seed"]: value(r) for r in runs}


def sizes(results: dict, model: str) -> list[int]:
    """The batch sizes ``model`` trained at with the linearly scaled rate."""
    settings = settings_of(results)
    return sorted({r["batch_size"] for r in results["runs"] if r["model"] == model
                   and math.isclose(r["lr"], scaled_lr(settings, r["batch_size"]))})


def grid_sizes(results: dict) -> list[int]:
    """Every batch size a net trained at with the linearly scaled rate."""
    return sorted({size for model in models(results) for size in sizes(results, model)})


def models(results: dict) -> list[str]:
    return [m for m in NORMS if any(r["model"] == m for r in results["runs"])]


def interval(results: dict, model: str, batch_size: int, key: str = "test_acc", lr: float | None = None
             ) -> stats.Interval:
    return stats.t_interval(list(per_seed(results, model, batch_size, lr, key).values()))


def difference(results: dict, a: tuple[str, int], b: tuple[str, int], key: str = "test_acc",
               key_b: str | None = None) -> stats.Interval:
    """``key`` of (model, batch size) ``a`` minus ``key_b`` (default: ``key``) of ``b``, seed by seed: the
    mean and its 95% interval."""
    return stats.paired_difference(*paired(per_seed(results, *a, key=key), per_seed(results, *b, key=key_b or key)))


def fall(results: dict, model: str) -> dict[int, float]:
    """Per seed, ``model``'s test accuracy at ``SMALL`` minus that at ``REFERENCE``."""
    small, ref = per_seed(results, model, SMALL), per_seed(results, model, REFERENCE)
    return {s: small[s] - ref[s] for s in small.keys() & ref.keys()}


def sweep_rates(results: dict) -> list[float]:
    base = settings_of(results).base_batch
    return sorted({r["lr"] for r in results["runs"] if r["batch_size"] == base and r["model"] in SWEEP})


def largest_rate(results: dict, model: str) -> dict[int, float]:
    """Per seed, the largest rate of the sweep at which ``model`` trains (``TRAINS``); where none does,
    half a decade below the sweep."""
    rates, base = sweep_rates(results), settings_of(results).base_batch
    out = {}
    for seed in settings_of(results).seeds:
        trained = [lr for lr in rates if per_seed(results, model, base, lr).get(seed, 0.0) >= TRAINS]
        out[seed] = max(trained) if trained else rates[0] / math.sqrt(10)
    return out


def wider_rates(results: dict) -> stats.Interval:
    """log10 of MyBN2d's largest training rate over the plain net's, seed by seed (decades)."""
    bn, plain = paired(largest_rate(results, "my_bn"), largest_rate(results, "plain"))
    return stats.paired_difference([math.log10(v) for v in bn], [math.log10(v) for v in plain])


# ---------------------------------------------------------------------------------------------- figures


def at(results: dict, nets: str | tuple[str, ...], batch_size: int, reading, *args, fmt: str) -> str:
    """A table cell: ``reading(results, *args)`` as text where each of ``nets`` trained at ``batch_size``."""
    trained = all(batch_size in sizes(results, m) for m in ((nets,) if isinstance(nets, str) else nets))
    return reading(results, *args).text(fmt) if trained else ""


def mode_gap(results: dict, model: str, batch_size: int) -> stats.Interval:
    """Training-mode minus eval-mode test accuracy, seed by seed."""
    return difference(results, (model, batch_size), (model, batch_size), "train_mode_acc", "test_acc")


def bars(ax, xs: list[float], cis: list[stats.Interval], model: str, name: str, f=lambda v: v) -> None:
    """``model``'s means and 95% intervals, its points moved a little sideways so that each net's bars show."""
    interval_bars(ax, [x * 1.04 ** (list(NORMS).index(model) - 3) for x in xs], cis, *COLOURS[model], name, f)


def plot_conv(results: dict, outfile: Path) -> None:
    """(a) test error against the batch size per norm (Wu & He's Figure 1); (b) training-mode minus
    eval-mode test accuracy of the batch-statistics layers; (c) train minus test accuracy; (d) test
    accuracy against the learning rate at batch 32, plain and MyBN2d. Error bars: 95% t-intervals."""
    fig, axes = subplots(2, 2, figsize=(13, 9.5))
    n = len(settings_of(results).seeds)
    (a, b), (c, d) = axes
    for model in models(results):
        xs = sizes(results, model)
        bars(a, xs, [interval(results, model, bs) for bs in xs], model, label(results, model), lambda v: 100 * (1 - v))
        bars(c, xs, [interval(results, model, bs, "gap") for bs in xs], model, label(results, model))
        if model in BATCH_STATS:
            bars(b, xs, [mode_gap(results, model, bs) for bs in xs], model, label(results, model))
    rates, base = sweep_rates(results), settings_of(results).base_batch
    for model in SWEEP:
        bars(d, rates, [interval(results, model, base, lr=lr) for lr in rates], model, label(results, model))
    d.axhline(TRAINS, color="0.5", lw=1, ls=":", label=f"trains: test accuracy ≥ {TRAINS:g}")
    for ax in (b, c):
        ax.axhline(0.0, color="0.5", lw=1)
    titles = {a: ("test error (%), eval mode", "(a) Test error against the batch size (lr ∝ batch)"),
              b: ("test accuracy, training mode − eval mode", "(b) The test batch's statistics against the running "
                  "estimates"),
              c: ("accuracy, train − test (eval mode)", "(c) Over-fitting: train minus test accuracy")}
    for ax, (ylabel, title) in titles.items():
        ax.set(xscale="log", xlabel="batch size", ylabel=ylabel, title=f"{title}\n{n} seeds, 95% intervals")
        ax.set_xticks(grid_sizes(results), [str(bs) for bs in grid_sizes(results)])
        ax.minorticks_off()
    a.set_yscale("log")
    d.set(xscale="log", ylim=(0, 1.02), xlabel="learning rate (SGD, momentum 0.9)", ylabel="test accuracy",
          title=f"(d) Learning rates at batch {settings_of(results).base_batch}\n{n} seeds, 95% intervals")
    for ax in (a, b, c, d):
        ax.legend(fontsize=8)
    save(fig, outfile)


# ---------------------------------------------------------------------------------------------- tables


def batch_table(results: dict) -> str:
    """Per batch size (rows) and norm (columns): the test accuracy in eval mode, then the paired rows."""
    nets, settings = models(results), settings_of(results)
    n = len(settings.seeds)
    lines = [
        f"Test accuracy on the 500 held-out digits after {results['config']['epochs']} epochs, eval mode: the mean "
        f"over {n} seeds and its 95% t-interval ({source(results)}). Learning rate {results['config']['lr']:g} · "
        f"B / {settings.base_batch} (SGD, momentum {settings.momentum}, cosine schedule). Below, seed by seed: "
        "MyBN2d − GroupNorm, Batch Renorm − MyBN2d and ghost BN − MyBN2d at each size; and, for the "
        "batch-statistics layers, the test accuracy in training mode (the test set in batches of the run's size, "
        "each normalised by its own statistics) minus that in eval mode.",
        "",
        "| batch size | lr | " + " | ".join(label(results, m) for m in nets) + " |",
        "|---|---|" + "---|" * len(nets),
    ]
    for bs in grid_sizes(results):
        cells = [at(results, m, bs, interval, m, bs, fmt=".3f") for m in nets]
        lines.append(f"| {bs} | {scaled_lr(settings, bs):g} | " + " | ".join(cells) + " |")
    pairs = [("MyBN2d − GroupNorm", "my_bn", "group_norm"), ("Batch Renorm − MyBN2d", "renorm", "my_bn"),
             ("ghost BN − MyBN2d", "ghost", "my_bn")]
    lines += ["", "| batch size | " + " | ".join(p[0] for p in pairs) + " | "
              + " | ".join(f"{label(results, m)}: training − eval mode" for m in BATCH_STATS) + " |",
              "|---|" + "---|" * (len(pairs) + len(BATCH_STATS))]
    for bs in grid_sizes(results):
        cells = [at(results, (a, b), bs, difference, (a, bs), (b, bs), fmt="+.3f") for _, a, b in pairs]
        cells += [at(results, m, bs, mode_gap, m, bs, fmt="+.3f") for m in BATCH_STATS]
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_table(results: dict) -> str:
    """Per batch size and norm: train minus test accuracy (eval mode)."""
    nets = models(results)
    lines = [
        f"Over-fitting: accuracy on the 1,297 training digits minus that on the 500 test digits, both in eval mode "
        f"(mean over {len(results['config']['seeds'])} seeds and its 95% t-interval). The last column: ghost BN − "
        "MyBN2d of that gap, seed by seed.",
        "",
        "| batch size | " + " | ".join(label(results, m) for m in nets) + " | ghost BN − MyBN2d |",
        "|---|" + "---|" * (len(nets) + 1),
    ]
    for bs in grid_sizes(results):
        cells = [at(results, m, bs, interval, m, bs, "gap", fmt="+.3f") for m in nets]
        cells.append(at(results, ("ghost", "my_bn"), bs, difference, ("ghost", bs), ("my_bn", bs), "gap", fmt="+.3f"))
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lr_table(results: dict) -> str:
    """Test accuracy at batch 32 per learning rate, plain and MyBN2d, and the largest rate that trains."""
    rates, settings = sweep_rates(results), settings_of(results)
    lines = [
        f"At batch {settings.base_batch}, {settings.epochs} epochs, SGD with momentum {settings.momentum} on a cosine "
        f"schedule: test accuracy, mean over {len(settings.seeds)} seeds and its 95% t-interval. *Largest that "
        f"trains*: the largest rate at which a seed ends with a test accuracy of at least {TRAINS:g}, the median "
        "over seeds.",
        "",
        "| net | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | largest that trains |",
        "|---|" + "---|" * (len(rates) + 1),
    ]
    for model in SWEEP:
        cells = [interval(results, model, settings.base_batch, lr=lr).text(".3f") for lr in rates]
        largest = sorted(largest_rate(results, model).values())
        lines.append(f"| {label(results, model)} | " + " | ".join(cells) + f" | {largest[len(largest) // 2]:g} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- verdicts

FALLS = stats.Rule(0.0, "below")  # accuracy at SMALL minus at REFERENCE; and that of MyBN2d minus GroupNorm's
HIGHER = stats.Rule(0.0, "above")  # accuracy, one layer minus the other
LESS_OVERFITTING = stats.Rule(0.0, "below")  # train − test accuracy, ghost minus MyBN2d
WIDER = stats.Rule(0.0, "above")  # decades, MyBN2d's largest training rate over the plain net's
RULES = {"batch norm falls at small batches": FALLS, "more than GroupNorm": FALLS, "renorm higher": HIGHER,
         "ghost higher": HIGHER, "ghost over-fits less": LESS_OVERFITTING, "larger rates with MyBN2d": WIDER}
PAGE = "[conv](docs/conv.md)"


def needs_the_batch(results: dict) -> Verdict:
    falls = stats.t_interval(list(fall(results, "my_bn").values()))
    more = stats.paired_difference(*paired(fall(results, "my_bn"), fall(results, "group_norm")))
    rule = (f"per seed, MyBN2d's test accuracy at batch {SMALL} minus at batch {REFERENCE} (falls), and that "
            f"minus GroupNorm's own change (more than GroupNorm); each holds where its interval lies below 0, does "
            f"not hold where it lies above, else not decided ({len(settings_of(results).seeds)} seeds)")
    return Verdict("Batch norm needs the batch (Wu & He 2018)",
                   f"on the conv net, MyBN2d's test accuracy falls from batch {REFERENCE} to {SMALL}, and GroupNorm's "
                   "does not as much",
                   f"test accuracy, batch {SMALL} − batch {REFERENCE}: MyBN2d {falls.text('+.3f')}; MyBN2d − "
                   f"GroupNorm of that {more.text('+.3f')}", rule,
                   f"falls: {bold(FALLS.decide(falls))}; more than GroupNorm's: {bold(FALLS.decide(more))}",
                   PAGE)


def renorm_fixes(results: dict) -> Verdict:
    """Whether Batch Renorm tests better at small batches. That it computes in training what it computes in
    inference is its construction (r and d), which the tests check, not a verdict: it could not fail."""
    higher = {bs: difference(results, ("renorm", bs), ("my_bn", bs)) for bs in (SMALL, REFERENCE)}
    rule = (f"per seed, Batch Renorm's test accuracy minus MyBN2d's at batch {SMALL} (batch {REFERENCE} beside it); "
            "holds where the interval lies above 0, does not hold where it lies below, else not decided")
    measured = [f"batch {bs}: Batch Renorm − MyBN2d {ci.text('+.3f')}" for bs, ci in higher.items()]
    answers = [f"higher at batch {bs}: {bold(HIGHER.decide(ci))}" for bs, ci in higher.items()]
    return Verdict("Batch Renormalization fixes small batches (Ioffe 2017)",
                   f"at batch {SMALL}, Batch Renorm tests better than MyBN2d",
                   "test accuracy, " + "; ".join(measured), rule, "; ".join(answers), PAGE)


def ghost_regularises(results: dict) -> Verdict:
    measured, answers, ghost = [], [], settings_of(results).ghost_batch
    for bs in sorted(set(sizes(results, "ghost")) & set(sizes(results, "my_bn"))):
        acc, gap = (difference(results, ("ghost", bs), ("my_bn", bs), key) for key in ("test_acc", "gap"))
        measured.append(f"batch {bs}: test accuracy {acc.text('+.3f')}, train − test {gap.text('+.3f')}")
        answers.append(f"batch {bs}: higher {bold(HIGHER.decide(acc))}, over-fits less "
                       f"{bold(LESS_OVERFITTING.decide(gap))}")
    rule = (f"per seed, ghost BN (ghost batches of {ghost}) minus MyBN2d at the same batch: its test accuracy "
            "(holds above 0) and its train − test accuracy (holds below 0); the opposite side does not hold, else "
            "not decided")
    return Verdict("Ghost batches regularise (Hoffer et al. 2017)",
                   "in large batches, batch norm over small ghost batches tests better and over-fits less",
                   "ghost BN − MyBN2d: " + "; ".join(measured), rule, "; ".join(answers), PAGE)


def larger_rates(results: dict) -> Verdict:
    ci = wider_rates(results)
    rates, base = sweep_rates(results), settings_of(results).base_batch
    rule = (f"per seed, log10 of MyBN2d's largest rate that trains (test accuracy ≥ {TRAINS:g}) over the plain net's, "
            f"in decades (rates {', '.join(f'{lr:g}' for lr in rates)} at batch {base}); holds where the "
            "interval lies above 0, does not hold where it lies below, else not decided")
    tie = ci.low == ci.high == 0
    return Verdict("Batch norm allows larger learning rates on a conv net (Bjorck et al. 2018)",
                   "MyBN2d's conv net still trains at learning rates where the plain one no longer does",
                   f"decades, MyBN2d − plain: {ci.text('.2g')}", rule,
                   "not decided (a tie in every seed)" if tie else bold(WIDER.decide(ci)), PAGE)


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


EXPERIMENT = Experiment(
    name="conv",
    doc=__doc__,
    settings=ConvSettings,
    run=run,
    figures=lambda results: {"conv.png": functools.partial(plot_conv, results)},
    tables=lambda results: {"conv-batch-table": batch_table(results), "conv-gap-table": gap_table(results),
                            "conv-lr-table": lr_table(results)},
    results_format=check_format,
    summary=batch_table,
    verdicts=verdicts,
)
