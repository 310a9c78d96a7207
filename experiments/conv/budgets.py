"""The conv net at more than one training budget: does what the verdicts say at the preset's 4 epochs
last when the cells that decide them train three times as long? A figure and a table, per budget, of
batch norm's fall from batch 8 to 2 (on its running averages and on precise statistics, beside
GroupNorm's and Batch Renorm's), of its test batch's statistics against its running ones at batch 2,
and of how far training got (the last epoch's training loss)."""

from __future__ import annotations

from pathlib import Path

from experiments.conv.reading import drop, drop_beyond, mode_gap, per_seed, sizes
from experiments.conv.training import REFERENCE, SMALL, settings_of
from lab import stats
from lab.pages import table
from lab.plotting import COLOURS, interval_bars, save, subplots
from lab.results import at_budget, budgets, source

FALLING = (("my_bn", "test_acc", "MyBN2d, running averages", "-"),  # (norm, evaluation, label, line style)
           ("my_bn", "precise", "MyBN2d, precise statistics", "--"),
           ("group_norm", "test_acc", "GroupNorm", "-"),
           ("renorm", "test_acc", "Batch Renorm, running averages", "-"))


def views(results: dict) -> list[tuple[int, dict]]:
    """Each budget with the cells of the fall (MyBN2d and GroupNorm at batch 2 and 8), and its results."""
    out = [(e, at_budget(results, e)) for e in budgets(results)]
    return [(e, v) for e, v in out if all({SMALL, REFERENCE} <= set(sizes(v, m)) for m in ("my_bn", "group_norm"))]


def loss(view: dict, model: str, batch_size: int) -> stats.Interval:
    """The training loss over the last epoch, mean over seeds and its t-interval."""
    return stats.t_interval(list(per_seed(view, model, batch_size, key="loss").values()))


def plot_budgets(results: dict, outfile: Path) -> None:
    """(a) the fall from batch REFERENCE to SMALL against the budget; (b) training-mode minus eval-mode
    accuracy at SMALL; (c) the last epoch's training loss at SMALL and REFERENCE (MyBN2d)."""
    fig, (a, b, c) = subplots(1, 3, figsize=(16, 4.8))
    shown = views(results)
    xs = [e for e, _ in shown]
    for i, (model, key, text, ls) in enumerate(FALLING):
        if all({SMALL, REFERENCE} <= set(sizes(v, model)) for _, v in shown):
            interval_bars(a, [x * 1.03 ** (i - 1.5) for x in xs], [drop(v, model, key) for _, v in shown],
                          COLOURS[model][0], ls, text)
    for i, model in enumerate(("my_bn", "renorm")):
        interval_bars(b, [x * 1.03 ** (i - 0.5) for x in xs], [mode_gap(v, model, SMALL) for _, v in shown],
                      COLOURS[model][0], "-", {"my_bn": "MyBN2d", "renorm": "Batch Renorm"}[model])
    for i, (batch_size, ls) in enumerate(((SMALL, "-"), (REFERENCE, "--"))):
        interval_bars(c, [x * 1.03 ** (i - 0.5) for x in xs], [loss(v, "my_bn", batch_size) for _, v in shown],
                      COLOURS["my_bn"][0], ls, f"MyBN2d, batch {batch_size}")
    n = len(settings_of(results).seeds)
    titles = {a: (f"test accuracy, batch {SMALL} − batch {REFERENCE}", "(a) Batch norm's fall at small batches"),
              b: ("test accuracy, training mode − eval mode", f"(b) The test batch's statistics, batch {SMALL}"),
              c: ("training loss over the last epoch", "(c) How far training got")}
    for ax, (ylabel, title) in titles.items():
        ax.set(xscale="log", xlabel="training budget (epochs)", ylabel=ylabel, title=f"{title}\n{n} seeds, 95% "
               "intervals")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    for ax in (a, b):
        ax.axhline(0.0, color="0.5", lw=1)
    save(fig, outfile)


def budget_table(results: dict) -> str:
    """Per budget: the falls, the gap MyBN2d − GroupNorm of them, training − eval mode at SMALL, and the
    last epoch's training loss and the training accuracy at SMALL and REFERENCE (MyBN2d)."""
    lines = [
        f"Per training budget ({source(results)}; the longer ones train only the cells the verdicts read, at the "
        f"same learning rates and cosine schedule): the test accuracy at batch {SMALL} minus at batch {REFERENCE}, "
        "over seeds and test digits; MyBN2d − GroupNorm of that, seed by seed; MyBN2d's training-mode minus "
        f"eval-mode test accuracy at batch {SMALL}; and how far MyBN2d's training got: its training loss over "
        "the last epoch and its training accuracy (eval mode), mean and 95% interval over seeds.",
        "",
    ]
    rows = []
    for epochs, view in views(results):
        cells = [str(epochs)]
        cells += [drop(view, m, key).text("+.3f") if {SMALL, REFERENCE} <= set(sizes(view, m)) else ""
                 for m, key, _, _ in FALLING]
        cells.append(drop_beyond(view, "my_bn", "group_norm").text("+.3f"))
        cells.append(mode_gap(view, "my_bn", SMALL).text("+.3f"))
        cells += [loss(view, "my_bn", b).text(".3f") for b in (SMALL, REFERENCE)]
        cells += [stats.t_interval(list(per_seed(view, "my_bn", b, key="train_acc").values()),
                                   bounds=(0.0, 1.0)).text(".3f")
                  for b in (SMALL, REFERENCE)]
        rows.append(cells)
    header = ("epochs", "MyBN2d, running averages", "MyBN2d, precise statistics", "GroupNorm", "Batch Renorm",
              "MyBN2d − GroupNorm", f"MyBN2d, training − eval mode at {SMALL}", f"loss at {SMALL}",
              f"loss at {REFERENCE}", f"training accuracy at {SMALL}", f"at {REFERENCE}")
    return "\n".join([*lines, table(header, rows)])
