"""What the figures share: the Agg backend, one colour and line style per net, labels, and the
mean-and-band drawing of a quantity over seeds. Each experiment draws its own figures with these.

matplotlib is imported on the first figure, not with this module: train.py imports every experiment
for its preset, and never draws.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from lab.diagnostics import SATURATED
from lab.nets import MLP_MODELS
from lab.norms import NORMS
from lab.regression import runs_of
from lab.stats import mean_std

VARIANT_COLOURS = {  # the MLP variants that are not a norm of their own: colour, line style
    "my_bn_local": ("#BCBD22", ":"),
    "plain_std_x": ("#9467BD", "-."),
    "plain_std_y": ("#8C564B", "-"),
    "plain_std_xy": ("#E377C2", "--"),
    "bn_first": ("#7F7F7F", ":"),
    "plain_center_y": ("#AEC7E8", "--"),
    "plain_scale_y": ("#98DF8A", "-."),
    "bn_last": ("#C49C94", "-"),
    "my_bn_noisy": ("#17BECF", "-."),
    "plain_noisy": ("#FF7F0E", ":"),
    "my_bn_m01": ("#9467BD", "-"),
    "my_bn_held": ("#9467BD", "-."),  # the conv net's MyBN2d with its filters' norms held
}


class _Colours(Mapping):
    """model -> (colour, line style): a norm's own (lab/norms.py, read at each lookup, so that a norm added
    there is drawn in its colour), else the MLP variant's (``VARIANT_COLOURS``)."""

    def __getitem__(self, model: str) -> tuple[str, str]:
        return NORMS[model].colour if model in NORMS else VARIANT_COLOURS[model]

    def __iter__(self):
        return iter({**NORMS, **VARIANT_COLOURS})

    def __len__(self) -> int:
        return len({**NORMS, **VARIANT_COLOURS})


COLOURS = _Colours()
Z_SATURATED = math.atanh(SATURATED)  # |z| beyond which |tanh(z)| > 0.99

Figures = dict[str, Callable[[Path], None]]  # file name -> function that draws it into the given path


@functools.cache
def pyplot():
    """``matplotlib.pyplot``, on the Agg backend (files only, no screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(*args, **kwargs):
    """``plt.subplots``: a new figure and its axes."""
    return pyplot().subplots(*args, **kwargs)


def label(model: str) -> str:
    return MLP_MODELS[model].label


def range_text(r: float) -> str:
    return f"(-{r:g}, {r:g})"


def stacked(runs: list[dict], get: Callable[[dict], list]) -> torch.Tensor:
    """One tensor (seeds, ...) from the same quantity of several runs."""
    return torch.tensor([get(run) for run in runs], dtype=torch.float64)


def band(ax, x, values: torch.Tensor, model: str, text: str | None = None, **kwargs) -> None:
    """Mean over seeds as a line, min–max over seeds as a shaded band. ``values`` is (seeds, len(x))."""
    colour, ls = COLOURS[model]
    ax.plot(x, values.mean(0), ls, color=colour, lw=2, label=label(model) if text is None else text, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, values.min(0).values, values.max(0).values, color=colour, alpha=0.15, lw=0)
        ax.figure.banded = len(values)  # save() says what the bands are


def interval_bars(ax, xs: list[float], cis: list, colour: str, ls: str, text: str, f=lambda v: v) -> None:
    """Means with their 95% intervals (``stats.Interval``s) at ``xs`` as error bars, through the monotone
    ``f`` (a test error from an accuracy, say)."""
    ys = [f(c.mean) for c in cis]
    bounds = [sorted((f(c.low), f(c.high))) for c in cis]
    err = [[y - lo for y, (lo, _) in zip(ys, bounds, strict=True)],
           [hi - y for y, (_, hi) in zip(ys, bounds, strict=True)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o" + ls, color=colour, lw=2, ms=4, capsize=3, label=text)


DPI = 110  # every figure's resolution
BANDS = "Lines: the mean over {} seeds; shaded bands: from the lowest seed to the highest (not a confidence interval)."


def seeds_text(n: int) -> str:
    """"1 seed", "5 seeds"."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def plain_log_ticks(ax) -> None:
    """A log y axis whose tick labels are plain numbers (2, 0.5, 200; not 2×10⁰), and only at its major
    ticks: decades where it spans more than one, about five evenly spaced values where it spans less."""
    ticker = pyplot().matplotlib.ticker
    low, high = ax.get_ylim()
    if high / low < 10:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(5))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def save(fig, outfile: Path, top: float = 1.0) -> None:
    """Lay out and write ``fig``, its panels below ``top`` (a fraction of its height: room for a legend of the
    whole figure above them); a figure with bands (``band``) says under it what they are. An axis of epochs
    ticks whole epochs only (a run of 2 epochs shows no 0.25)."""
    ticker = pyplot().matplotlib.ticker
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))
    if getattr(fig, "banded", 0):
        fig.text(0.5, 0.005, BANDS.format(fig.banded), ha="center", va="bottom", fontsize=8, color="0.3")
        fig.tight_layout(rect=(0, 0.025, 1, top))
    else:
        fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(outfile, format="png", dpi=DPI)
    pyplot().close(fig)


def mse_panel(ax, results: dict, r: float, models: list[str]) -> None:
    """Test MSE per epoch for ``models``: mean and min–max band over seeds, with the noise floor."""
    for model in models:
        mse = stacked(runs_of(results, r, model), lambda run: run["test_mse"])  # (seeds, epochs + 1)
        band(ax, range(mse.shape[1]), mse, model, marker="o", ms=3)
    floor = mean_std([d["noise_std"] ** 2 for d in results["datasets"] if d["range"][1] == r])[0]
    ax.axhline(floor, color="0.3", ls=":", lw=1.5, label=f"noise floor σ² = {floor:.3g}")
    seeds = len(results["config"]["seeds"])
    ax.set(yscale="log", xlabel="epoch", ylabel="test MSE",
           title=f"Test MSE, x in {range_text(r)}; mean, band: min–max over {seeds_text(seeds)}")
    ax.legend(fontsize=8)


def saturation_panel(ax, results: dict, r: float, models: list[str], title: str) -> None:
    """The fraction of saturated units in the last hidden block along training, per net (needs diagnostics)."""
    for model in models:
        runs = runs_of(results, r, model)
        sat = stacked(runs, lambda run: run["diagnostics"]["saturation"])  # (seeds, records, blocks)
        band(ax, runs[0]["diagnostics"]["step"], sat[:, :, -1], model)
    ax.set(xlabel="training step", ylabel=f"fraction of units with |tanh| > {SATURATED}", ylim=(-0.03, 1.03),
           title=title)
