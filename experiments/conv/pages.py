"""The conv figure and tables."""

from __future__ import annotations

from pathlib import Path

from experiments.conv.reading import (
    difference,
    grid_sizes,
    interval,
    label,
    largest_rate,
    mode_gap,
    models,
    sizes,
    sweep_rates,
)
from experiments.conv.training import BATCH_STATS, HELD, NONIID, SWEEP, TRAINS, scaled_lr, settings_of, sweep_seeds
from lab import stats
from lab.norms import NORMS
from lab.pages import table
from lab.plotting import COLOURS, interval_bars, save, subplots
from lab.results import source

HELD_LABEL = "MyBN2d, norms held"


def at(results: dict, nets: str | tuple[str, ...], batch_size: int, reading, *args, fmt: str) -> str:
    """A table cell: ``reading(results, *args)`` as text where each of ``nets`` trained at ``batch_size``."""
    trained = all(batch_size in sizes(results, m) for m in ((nets,) if isinstance(nets, str) else nets))
    return reading(results, *args).text(fmt) if trained else ""




def bars(ax, xs: list[float], cis: list[stats.Interval], model: str, name: str, f=lambda v: v) -> None:
    """``model``'s means and 95% intervals, its points moved a little sideways so that each net's bars show."""
    interval_bars(ax, [x * 1.04 ** (list(NORMS).index(model) - 3) for x in xs], cis, *COLOURS[model], name, f)


def plot_conv(results: dict, outfile: Path) -> None:
    """(a) test error against the batch size per norm (Wu & He's Figure 1); (b) training-mode minus
    eval-mode test accuracy of the batch-statistics layers; (c) train minus test accuracy; (d) test
    accuracy against the learning rate at batch 32, plain and MyBN2d (and MyBN2d with its norms held).
    Error bars: 95% intervals over the seeds and the test digits (``stats.accuracy_interval``)."""
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
        bars(d, rates, [interval(results, model, base, lr=lr, sweep=True) for lr in rates], model,
             label(results, model))
    held = sweep_rates(results, (HELD,))
    if held:
        interval_bars(d, held, [interval(results, HELD, base, lr=lr, sweep=True) for lr in held], *COLOURS[HELD],
                      HELD_LABEL)
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
          title=f"(d) Learning rates at batch {settings_of(results).base_batch}\n"
                f"{len(sweep_seeds(settings_of(results)))} seeds, 95% intervals")
    for ax in (a, b, c, d):
        ax.legend(fontsize=8)
    save(fig, outfile)




def batch_table(results: dict) -> str:
    """Per batch size (rows) and norm (columns): the test accuracy in eval mode, then the paired rows."""
    nets, settings = models(results), settings_of(results)
    n = len(settings.seeds)
    lines = [
        f"Test accuracy on the 500 held-out digits after {results['config']['epochs']} epochs, eval mode: the mean "
        f"over {n} seeds and its 95% interval, counting the seeds' and the 500 digits' sampling error "
        f"(lab/stats.py, accuracy_interval; {source(results)}). Learning rate {results['config']['lr']:g} · "
        f"B / {settings.base_batch} (SGD, momentum {settings.momentum}, cosine schedule). Below, seed by seed: "
        "MyBN2d − GroupNorm, Batch Renorm − MyBN2d and ghost BN − MyBN2d at each size; and, for the "
        "batch-statistics layers, the test accuracy in training mode (the test set in batches of the run's size, "
        "each normalised by its own statistics) minus that in eval mode.",
        "",
    ]
    lines.append(table(("batch size", "lr", *(label(results, m) for m in nets)),
                       [[str(bs), f"{scaled_lr(settings, bs):g}", *(at(results, m, bs, interval, m, bs, fmt=".3f")
                                                                   for m in nets)] for bs in grid_sizes(results)]))
    pairs = [("MyBN2d − GroupNorm", "my_bn", "group_norm"), ("Batch Renorm − MyBN2d", "renorm", "my_bn"),
             ("ghost BN − MyBN2d", "ghost", "my_bn")]
    rows = [[str(bs), *(at(results, (a, b), bs, difference, (a, bs), (b, bs), fmt="+.3f") for _, a, b in pairs),
             *(at(results, m, bs, mode_gap, m, bs, fmt="+.3f") for m in BATCH_STATS)] for bs in grid_sizes(results)]
    lines += ["", table(("batch size", *(p[0] for p in pairs),
                         *(f"{label(results, m)}: training − eval mode" for m in BATCH_STATS)), rows)]
    return "\n".join(lines)


def precise_table(results: dict) -> str:
    """Per batch size and batch-statistics layer: the test accuracy in eval mode on the running averages,
    on precise statistics, and precise minus running, seed by seed."""
    nets = [m for m in BATCH_STATS if m in models(results)]
    lines = [
        "Eval mode on two sets of statistics: the running averages training left (momentum "
        f"{settings_of(results).bn_momentum:g}) and precise statistics, each layer's mean and variance recomputed "
        "over the 1,297 training digits with the final weights, layer by layer from the input (Wu & Johnson 2021; "
        "lab/loop.py, precise_statistics). Test accuracy, mean and 95% interval over seeds and test digits; "
        "*precise − running*: seed by seed and digit by digit.",
        "",
    ]
    rows = []
    for bs in grid_sizes(results):
        cells = [str(bs)]
        for m in nets:
            cells += [at(results, m, bs, interval, m, bs, key, fmt=".3f") for key in ("test_acc", "precise")]
            cells.append(at(results, m, bs, difference, (m, bs), (m, bs), "precise", "test_acc", fmt="+.3f"))
        rows.append(cells)
    header = ("batch size", *(f"{label(results, m)}: {what}" for m in nets
                              for what in ("running", "precise", "precise − running")))
    return "\n".join([*lines, table(header, rows)])


def gap_table(results: dict) -> str:
    """Per batch size and norm: train minus test accuracy (eval mode)."""
    nets = models(results)
    lines = [
        f"Over-fitting: accuracy on the 1,297 training digits minus that on the 500 test digits, both in eval mode "
        f"(mean over {len(results['config']['seeds'])} seeds and its 95% interval over seeds and test digits). The "
        "last column: ghost BN − MyBN2d of that gap, seed by seed.",
        "",
    ]
    rows = [[str(bs), *(at(results, m, bs, interval, m, bs, "gap", fmt="+.3f") for m in nets),
             at(results, ("ghost", "my_bn"), bs, difference, ("ghost", bs), ("my_bn", bs), "gap", fmt="+.3f")]
            for bs in grid_sizes(results)]
    return "\n".join([*lines, table(("batch size", *(label(results, m) for m in nets), "ghost BN − MyBN2d"), rows)])


def lr_table(results: dict) -> str:
    """Test accuracy at batch 32 per learning rate, plain and MyBN2d, and the largest rate that trains."""
    rates, settings = sweep_rates(results), settings_of(results)
    lines = [
        f"At batch {settings.base_batch}, {settings.epochs} epochs, SGD with momentum {settings.momentum} on a cosine "
        f"schedule: test accuracy, mean over {len(sweep_seeds(settings))} seeds and its 95% interval over seeds and "
        f"test digits. *Largest that trains*: the largest rate at which a seed ends with a test accuracy of at least "
        f"{TRAINS:g}, the median over seeds. *{HELD_LABEL}*: MyBN2d with every filter scaled back to its initial norm "
        "after each step, at the rates where MyBN2d trains and the plain net does not.",
        "",
    ]
    rows = []
    for model in SWEEP:
        cells = [interval(results, model, settings.base_batch, lr=lr, sweep=True).text(".3f") for lr in rates]
        largest = sorted(largest_rate(results, model).values())
        rows.append([label(results, model), *cells, f"{largest[len(largest) // 2]:g}"])
    held = sweep_rates(results, (HELD,))
    if held:
        cells = [interval(results, HELD, settings.base_batch, lr=lr, sweep=True).text(".3f") if lr in held else ""
                 for lr in rates]
        rows.append([HELD_LABEL, *cells, ""])
    return "\n".join([*lines, table(("net", *(f"lr {lr:g}" for lr in rates), "largest that trains"), rows)])


def noniid_table(results: dict) -> str:
    """At the base batch size, MyBN2d and Batch Renorm trained on i.i.d. and on non-i.i.d. batches: the test
    accuracy on each evaluation, and the differences the verdict reads."""
    settings = settings_of(results)
    base, k = settings.base_batch, settings.noniid_classes
    evaluations = {"eval mode, running averages": "test_acc", "eval mode, precise statistics": "precise",
                   "training mode": "train_mode_acc"}
    lines = [
        f"At batch {base}, {settings.epochs} epochs: trained on i.i.d. batches (the grid's) and on non-i.i.d. batches, "
        f"each drawn from {k} classes, {base // max(k, 1)} digits of each (lab/loop.py, ClassBatchOrder). Test "
        "accuracy, mean over seeds and its 95% interval over seeds and test digits; training mode normalises each "
        "test batch (drawn at random from the test digits, so i.i.d.) by its own statistics. The non-i.i.d. cells "
        f"train the learning-rate sweep's {len(sweep_seeds(settings))} seeds, as does MyBN2d's at this rate; Batch "
        f"Renorm on i.i.d. batches, the grid's {len(settings.seeds)}. Below, seed by seed, on the seeds both have.",
        "",
    ]
    ten = len(sweep_seeds(settings))
    cells = [(layer, "i.i.d.", layer, layer == "my_bn") for layer in NONIID.values()]  # MyBN2d's: the sweep's cell
    cells += [(layer, "non-i.i.d.", model, True) for model, layer in NONIID.items()]
    rows = [[label(results, layer), batches, str(ten if sweep else len(settings.seeds)),
             *(at(results, model, base, interval, model, base, key, None, sweep, fmt=".3f")
               for key in evaluations.values())] for layer, batches, model, sweep in cells]
    bn, renorm = NONIID
    pairs = {"MyBN2d: non-i.i.d. − i.i.d.": (bn, "my_bn"), "non-i.i.d.: Batch Renorm − MyBN2d": (renorm, bn)}
    for name, (a, b) in pairs.items():
        rows.append([f"*{name}*", "", str(ten),
                     *(at(results, (a, b), base, difference, (a, base), (b, base), key, None, None, True, fmt="+.3f")
                       for key in evaluations.values())])
    return "\n".join([*lines, table(("net", "batches", "seeds", *evaluations), rows)])
