"""The main experiment: the plain, nn.BatchNorm1d and MyBN nets on inputs in (-1, 1) and (-5, 5).

Its figures: the data, test MSE and fits per range, saturation and gradients per block, and one unit's
tanh input as percentiles (Figure 1 (b, c) of Ioffe & Szegedy, 2015). Its tables: the results, and
saturation per block.
"""

from __future__ import annotations

from pathlib import Path

import torch

from experiments.record import Experiment
from lab.data import make_dataset, target
from lab.diagnostics import SATURATED, start_end
from lab.nets import BN_PAIR
from lab.pages import table
from lab.plotting import COLOURS, Z_SATURATED, Figures, band, label, mse_panel, range_text, save, stacked, subplots
from lab.regression import Regression, dataset_of, fit_spread, models_of, ranges_of, run_experiment, runs_of, summarize
from lab.results import source
from lab.stats import mean_std
from lab.verdicts import versus


def plot_data(results: dict, r: float, outfile: Path) -> None:
    """The training set of the first seed, as train.py generated it, and the noise-free curve."""
    config = results["config"]
    seed = config["seeds"][0]
    noise_std = dataset_of(results, r, seed)["noise_std"]
    data = make_dataset(r, seed, a=config["a"], b=config["b"], noise_std=noise_std)
    fig, ax = subplots(figsize=(5.5, 4))
    ax.scatter(data.x_train.squeeze(1), data.y_train.squeeze(1), s=6, alpha=0.35, color="#FF9359",
               label=f"train data ({len(data.x_train)} points)")
    x = data.x_test.double()
    ax.plot(x.squeeze(1), target(x, config["a"], config["b"]).squeeze(1), "k--", lw=1.5, label="a·x² + b")
    ax.set(xlabel="x", ylabel="y", title=f"Data, x in {range_text(r)}, noise std {noise_std:.3g}")
    ax.legend(loc="upper center")
    save(fig, outfile)


def plot_loss_and_fit(results: dict, r: float, outfile: Path) -> None:
    """Left: test MSE per epoch over seeds for each net. Right: fitted curves over the test points."""
    config = results["config"]
    fig, (ax_mse, ax_fit) = subplots(1, 2, figsize=(12, 4.4))
    mse_panel(ax_mse, results, r, models_of(results))
    for model in models_of(results):
        colour, ls = COLOURS[model]
        for i, run in enumerate(runs_of(results, r, model)):
            x_test = dataset_of(results, r, run["seed"])["x_test"]
            ax_fit.plot(x_test, run["predictions"], ls, color=colour, lw=1.2, alpha=0.6,
                        label=label(model) if i == 0 else None)
    data = dataset_of(results, r, config["seeds"][0])
    ax_fit.scatter(data["x_test"], data["y_test"], s=12, color="0.45", alpha=0.6,
                   label=f"test points (seed {config['seeds'][0]})")
    ax_fit.set(xlabel="x", ylabel="y", title=f"Fits after {config['epochs']} epochs, one line per seed")
    ax_fit.legend(fontsize=8, loc="upper center")
    save(fig, outfile)


def plot_diagnostics(results: dict, r: float, models: list[str], outfile: Path) -> None:
    """Per hidden block: the fraction of saturated tanh units, and the gradient norm of its weights."""
    blocks = len(results["runs"][0]["diagnostics"]["saturation"][0])
    fig, axes = subplots(2, blocks, figsize=(3.4 * blocks, 6.2), sharex=True)
    for model in models:
        runs = runs_of(results, r, model)
        steps = runs[0]["diagnostics"]["step"]
        sat = stacked(runs, lambda run: run["diagnostics"]["saturation"])  # (seeds, records, blocks)
        grad = stacked(runs, lambda run: run["diagnostics"]["grad_norm"])
        for b in range(blocks):
            band(axes[0, b], steps, sat[:, :, b], model)
            band(axes[1, b], steps, grad[:, :, b], model)
    for b in range(blocks):
        axes[0, b].set(title=f"block {b + 1}", ylim=(-0.03, 1.03))
        axes[1, b].set(yscale="log", xlabel="training step")
    axes[0, 0].set_ylabel(f"fraction of units with |tanh| > {SATURATED}")
    axes[1, 0].set_ylabel("‖∂loss/∂W‖ of the block's Linear")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"x in {range_text(r)}: saturation and gradients per block (mean, min–max over seeds)")
    save(fig, outfile)


def plot_percentiles(results: dict, models: list[str], outfile: Path) -> None:
    """Ioffe & Szegedy (2015), Figure 1 (b, c): one unit's tanh input over training, as percentiles."""
    ranges = ranges_of(results)
    fig, axes = subplots(len(ranges), len(models), figsize=(4.2 * len(models), 3.4 * len(ranges)), squeeze=False)
    seed = results["config"]["seeds"][0]
    for row, r in enumerate(ranges):
        for col, model in enumerate(models):
            ax = axes[row, col]
            diag = runs_of(results, r, model)[0]["diagnostics"]
            last = len(diag["unit_q"][0]) - 1
            q = torch.tensor(diag["unit_q"])[:, last, :]  # (records, 3): 15th, 50th, 85th percentile
            colour = COLOURS[model][0]
            for k, pct in enumerate(diag["quantiles"]):
                ax.plot(diag["step"], q[:, k], color=colour, lw=2 if pct == 0.5 else 1, label=f"{pct:.0%}")
            ax.axhspan(Z_SATURATED, 99, color="0.85", lw=0)
            ax.axhspan(-99, -Z_SATURATED, color="0.85", lw=0)
            top = max(3.5, q.abs().max().item() * 1.1)
            ax.set(ylim=(-top, top), title=f"{label(model)}, x in {range_text(r)}", xlabel="training step")
            if col == 0:
                ax.set_ylabel(f"tanh input, unit {diag['unit']} of block {last + 1}")
            ax.legend(fontsize=7, title="percentile", title_fontsize=7, loc="lower right")
    fig.suptitle(f"One unit's tanh input over training (seed {seed}); grey: where tanh saturates")
    save(fig, outfile)



def results_table(results: dict) -> str:
    """The README's table of the main experiment, and how often the plain net beats each BN net."""
    config = results["config"]
    lines = [
        f"After {config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds "
        f"({config['dtype']}, {source(results)}). *Fit spread* is the std of the predictions over "
        "the test inputs divided by the std of the test targets: 0 means the net predicts a constant. *× plain*: "
        "the net's final test MSE over the plain net's, seed by seed: the geometric mean of the ratios and its 95% "
        "t-interval.",
        "",
    ]
    rows = []
    for row in summarize(results):
        runs = runs_of(results, row["range"], row["model"])
        start = mean_std([run["test_mse"][0] for run in runs])[0]
        spreads = [fit_spread(results, run) for run in runs]
        rows.append([range_text(row["range"]), label(row["model"]), f"{start:.4g}",
                     f"{row['mean']:.4g} ± {row['std']:.2g}", versus(results, row["range"], row["model"], "plain"),
                     f"{row['noise_floor']:.3g}", f"{row['mean'] / row['noise_floor']:.3g}",
                     f"{min(spreads):.2f}–{max(spreads):.2f}"])
    lines += [table(("inputs", "net", "test MSE before training", "final test MSE", "× plain", "noise floor σ²",
                     "final / floor", "fit spread, min–max"), rows), ""]
    for r in ranges_of(results):
        plain = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, "plain")}
        for model in BN_PAIR:
            bn = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, model)}
            if plain and bn:
                wins = sum(plain[s] < bn[s] for s in bn if s in plain)
                lines.append(
                    f"- {range_text(r)}: the plain net ends below {label(model)} in {wins} of {len(bn)} seeds."
                )
    return "\n".join(lines)


def saturation_table(results: dict) -> str:
    """Main experiment: saturation per block and the last block's gradient norm, first step → last."""
    blocks = len(results["runs"][0]["diagnostics"]["saturation"][0])
    lines = [
        "Fraction of tanh units with |tanh| > 0.99 in the training batch, per block, and the gradient norm of "
        f"block 4's weights: at the first step → at the last, mean over seeds ({source(results)}).",
        "",
    ]
    rows = [[range_text(r), label(model), *(start_end(runs, "saturation", b, ".2f") for b in range(blocks)),
             start_end(runs, "grad_norm", -1, ".2g")]
            for r in ranges_of(results) for model in models_of(results) for runs in [runs_of(results, r, model)]]
    header = ("inputs", "net", *(f"block {b + 1}" for b in range(blocks)), "‖∂loss/∂W‖, block 4")
    return "\n".join([*lines, table(header, rows)])


def figures(main: dict) -> Figures:
    todo = {}
    diagnostics = "diagnostics" in main["runs"][0]
    for r in ranges_of(main):
        todo[f"data_r{r:g}.png"] = lambda out, r=r: plot_data(main, r, out)
        todo[f"loss_fit_r{r:g}.png"] = lambda out, r=r: plot_loss_and_fit(main, r, out)
        if diagnostics:
            todo[f"diagnostics_r{r:g}.png"] = lambda out, r=r: plot_diagnostics(main, r, models_of(main), out)
    if diagnostics:
        todo["percentiles.png"] = lambda out: plot_percentiles(main, models_of(main), out)
    return todo


def tables(main: dict) -> dict[str, str]:
    out = {"results-table": results_table(main)}
    if "diagnostics" in main["runs"][0]:
        out["saturation-table"] = saturation_table(main)
    return out


EXPERIMENT = Experiment(
    name="main",
    doc=__doc__,
    settings=Regression,  # the regression task's settings, whose defaults are its preset
    run=run_experiment,
    figures=figures,
    tables=tables,
)
