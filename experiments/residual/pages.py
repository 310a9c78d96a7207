"""The residual experiment's figures and tables: the signal propagation at initialisation, and trainability
against depth and learning rate."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from experiments.residual.reading import (
    at_init,
    falls_as,
    init_depths,
    interval,
    largest_rate,
    rates,
)
from experiments.residual.training import LONG, TRAINS, settings_of
from lab import stats
from lab.pages import table
from lab.plotting import interval_bars, save, seeds_text, subplots
from lab.resnets import VARIANTS
from lab.results import at_budget, budgets, source

INIT_KEYS = {"stream_sq": "E[x_l²], the stream's mean square", "stream_var": "the stream's average channel variance",
             "ratio": "the branch's variance over the stream's"}


def geometric_mean(rows: list[list[float]]) -> list[float]:
    """Per block, the geometric mean over seeds (0 where a seed's value is 0)."""
    return [0.0 if min(col) <= 0 else math.exp(math.fsum(map(math.log, col)) / len(col))
            for col in zip(*rows, strict=True)]


def variants_at_init(results: dict, depth: int) -> list[str]:
    return [v for v in settings_of(results).variants if depth in init_depths(results, v)]


def plot_init(results: dict, outfile: Path) -> None:
    """At the deepest depth measured, per variant and block: the stream's mean square, its average channel
    variance, and the branch's variance over the stream's against 1/(l + 1); geometric means over seeds."""
    depth = max(settings_of(results).init_depths)
    fig, axes = subplots(1, 3, figsize=(17, 5))
    blocks = list(range(1, depth + 1))
    zero = []
    for variant in variants_at_init(results, depth):
        colour, ls = VARIANTS[variant].colour
        for ax, key in zip(axes, INIT_KEYS, strict=True):
            ys = geometric_mean(list(at_init(results, variant, depth, key).values()))
            if any(y <= 0 for y in ys):  # a log axis has no 0: the identity's nets are named instead
                if key == "ratio":
                    zero.append(variant)
                continue
            ax.plot(blocks, ys, ls, color=colour, lw=2, label=VARIANTS[variant].label)
    axes[2].plot(blocks, [1 / b for b in blocks], color="0.3", lw=1, label="1/(l + 1)")
    n = len(settings_of(results).seeds)
    for ax, (key, text) in zip(axes, INIT_KEYS.items(), strict=True):
        ax.set(yscale="log", xlabel="block l + 1 (from the input)", ylabel=text,
               title=f"{'(a)' if key == 'stream_sq' else '(b)' if key == 'stream_var' else '(c)'} {text}\n{depth} "
                     f"blocks at initialisation, {seeds_text(n)} (geometric mean)")
    axes[2].set_xscale("log")
    if zero:
        axes[2].text(0.02, 0.02, "0 at every block (the identity): " + ", ".join(VARIANTS[v].label for v in zero),
                     transform=axes[2].transAxes, fontsize=8)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    save(fig, outfile)


def views(results: dict) -> list[tuple[int, int, dict]]:  # the table's rows: each depth and budget
    """(depth, epochs, results at that budget) for each trained depth at the preset budget, then the deepest at
    each longer one."""
    settings = settings_of(results)
    first = [(d, settings.epochs, results) for d in settings.depths]
    return first + [(max(settings.depths), e, at_budget(results, e)) for e in budgets(results)[1:]]


def plot_training(results: dict, outfile: Path) -> None:
    """Per trained depth: each variant's test accuracy against the learning rate (mean over seeds and its 95%
    interval over seeds and test digits), with the line above which a run trains; then, at the deepest depth and
    the common rate, the nets of the longer budgets at each budget."""
    settings = settings_of(results)
    long = [(e, at_budget(results, e)) for e in budgets(results)]
    long = [(e, view) for e, view in long if any(rates(view, v, max(settings.depths)) for v in LONG)]
    fig, axes = subplots(1, len(settings.depths) + (len(long) > 1), figsize=(5.5 * (len(settings.depths) + 1), 5),
                         squeeze=False)
    for ax, depth in zip(axes[0], settings.depths, strict=False):
        for i, variant in enumerate(settings.variants):
            grid = rates(results, variant, depth)
            if grid:
                colour, ls = VARIANTS[variant].colour
                interval_bars(ax, [lr * 1.04 ** (i - 3) for lr in grid], [interval(results, variant, depth, lr)
                                                                         for lr in grid], colour, ls,
                              VARIANTS[variant].label)
        ax.set(xscale="log", xlabel="learning rate (SGD, momentum 0.9, cosine)",
               title=f"({'ab'[settings.depths.index(depth)] if len(settings.depths) < 3 else depth}) {depth} blocks, "
                     f"{settings.epochs} epochs")
        ax.set_xticks(settings.rates, [f"{r:g}" for r in settings.rates])
        ax.minorticks_off()
    if len(long) > 1:
        ax, depth, lr = axes[0][-1], max(settings.depths), settings.common_rate
        shown = [v for v in LONG if v in settings.variants]
        for j, (epochs, view) in enumerate(long):
            xs = [i + 0.15 * (j - (len(long) - 1) / 2) for i in range(len(shown))]
            cis = [interval(view, v, depth, lr) for v in shown]
            ax.errorbar(xs, [c.mean for c in cis], yerr=[[c.mean - c.low for c in cis], [c.high - c.mean for c in cis]],
                        fmt="os^D"[j % 4], color=f"{0.6 - 0.6 * j / max(1, len(long) - 1):.2f}", capsize=3,
                        ls="none", label=f"{epochs} epochs")
        ax.set_xticks(range(len(shown)), [VARIANTS[v].label for v in shown], fontsize=8)
        ax.set(xlim=(-0.5, len(shown) - 0.5), title=f"(c) {depth} blocks, lr {lr:g}, by training budget")
        ax.legend(fontsize=8)
    for ax in axes[0]:
        ax.axhline(TRAINS, color="0.5", lw=1)
        ax.set(ylim=(0, 1), ylabel="test accuracy (eval mode)")
        ax.set_title(f"{ax.get_title()}\n{seeds_text(len(settings.seeds))}, 95% intervals")
    shown = {}  # each net once, from whichever panel draws it (those without skips: the deepest only)
    for ax in axes[0][:len(settings.depths)]:
        shown |= {text: handle for handle, text in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(shown.values()), list(shown), loc="upper center", ncol=len(shown), fontsize=8, frameon=False)
    save(fig, outfile, top=0.9)


def init_table(results: dict) -> str:
    """Per depth measured and variant: the stream's mean square and the branch's share at the last block
    (geometric means over seeds), and the slope of the share against the block (mean and 95% interval)."""
    rows = []
    for depth in settings_of(results).init_depths:
        for variant in variants_at_init(results, depth):
            sq = geometric_mean(list(at_init(results, variant, depth, "stream_sq").values()))[-1]
            share = geometric_mean(list(at_init(results, variant, depth, "ratio").values()))[-1]
            slope = falls_as(results, variant, depth) if share > 0 else None
            rows.append([str(depth), VARIANTS[variant].label, f"{sq:.3g}", f"{share:.3g}",
                         "" if slope is None else stats.Interval(slope.mean - 1, slope.low - 1, slope.high - 1,
                                                                 slope.n).text("+.2f")])
    lines = [f"At initialisation ({source(results)}; {seeds_text(len(settings_of(results).seeds))}, "
             f"{settings_of(results).init_batch} training digits each, batch norm on the batch's statistics): at the "
             "last block, the stream's mean square E[x²] and the branch's variance over the stream's (geometric "
             "means over seeds), and the slope of log(that share) against log(l + 1) over the blocks (−1: it falls "
             "as 1/(l + 1); mean and 95% interval over seeds; none where the share is 0, the identity).", ""]
    return "\n".join([*lines, table(("blocks", "net", "E[x²], last block", "branch / stream, last block",
                                     "slope"), rows)])


def training_table(results: dict) -> str:
    """Per depth and budget and variant: the test accuracy at each rate (mean over seeds), and the largest rate
    at which it trains (median over seeds, and the seeds' range), on the running averages and on precise
    statistics."""
    settings = settings_of(results)
    grid = sorted(settings.rates)
    rows = []
    for depth, epochs, view in views(results):
        for variant in settings.variants:
            have = rates(view, variant, depth)
            if not have:
                continue
            cells = [str(depth), str(epochs), VARIANTS[variant].label]
            cells += [interval(view, variant, depth, lr).text(".2f") if lr in have else "" for lr in grid]
            for key in ("test_acc", "precise"):
                if have != grid or (key == "precise" and VARIANTS[variant].norm == "plain"):
                    cells.append("")
                    continue
                largest = sorted(largest_rate(view, variant, depth, key).values())
                median = float(torch.tensor(largest, dtype=torch.float64).quantile(0.5))
                cells.append(f"{median:.3g} ({largest[0]:.3g} to {largest[-1]:.3g})")
            rows.append(cells)
    lines = [f"Test accuracy ({source(results)}; eval mode on the running averages; mean and 95% interval over "
             f"{seeds_text(len(settings.seeds))} and the test digits) at each learning rate, and the largest rate at "
             f"which a net trains (test accuracy ≥ {TRAINS:g}; median over seeds, and their range; half a decade "
             f"below the grid, {grid[0] / math.sqrt(10):.3g}, where none does), on the running averages and on "
             "precise statistics (batch norm only). At the longer budgets only the deepest nets train, at the common "
             "rate: "
             + ", ".join(VARIANTS[v].label for v in LONG) + ".", ""]
    header = ("blocks", "epochs", "net", *(f"lr {lr:g}" for lr in grid), "largest rate", "largest rate, precise")
    return "\n".join([*lines, table(header, rows)])
