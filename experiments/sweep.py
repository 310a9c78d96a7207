"""sweep: the input range R from 0.5 to 10 at one signal-to-noise ratio (noise std 0.1·R²): where
does the plain net stop fitting, and how far do the batch-norm nets reach?"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from experiments.record import Experiment
from lab.pages import table
from lab.plotting import band, label, save, subplots
from lab.regression import Regression, dataset_of, models_of, ranges_of, run_experiment, runs_of
from lab.results import source
from lab.stats import mean_std
from lab.verdicts import versus


def sweep_curves(results: dict, model: str) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Ranges, final test MSE ÷ Var(y_test) (seeds, ranges), and the noise floor on the same scale."""
    ranges = ranges_of(results)
    ratios, floors = [], []
    for r in ranges:
        runs = runs_of(results, r, model)
        var_y = [torch.tensor(dataset_of(results, r, run["seed"])["y_test"]).var().item() for run in runs]
        ratios.append([run["test_mse"][-1] / v for run, v in zip(runs, var_y, strict=True)])
        floors.append(mean_std([dataset_of(results, r, run["seed"])["noise_std"] ** 2 / v
                                for run, v in zip(runs, var_y, strict=True)])[0])
    return ranges, torch.tensor(ratios, dtype=torch.float64).T, torch.tensor(floors)


def plot_sweep(results: dict, outfile: Path) -> None:
    """Final test MSE relative to the targets' variance, against the input range R."""
    fig, ax = subplots(figsize=(7.5, 4.6))
    for model in models_of(results):
        ranges, ratios, floors = sweep_curves(results, model)
        band(ax, ranges, ratios, model, marker="o", ms=4)
    ax.plot(ranges, floors, ":", color="0.3", lw=1.5, label="noise floor σ² / Var(y)")
    ax.axhline(1.0, color="0.6", lw=1, label="predicting the mean of y")
    config = results["config"]
    title = (f"Same signal-to-noise for every R (noise std {config['noise_scaled']:g}·R²), "
             f"{config['epochs']} epochs, {len(config['seeds'])} seeds")
    ax.set(xscale="log", yscale="log", xlabel="input range R (inputs in (-R, R))",
           ylabel="final test MSE / Var(y_test)", title=title)
    ax.set_xticks(ranges, [f"{r:g}" for r in ranges])
    ax.legend(fontsize=8)
    save(fig, outfile)


def sweep_table(results: dict) -> str:
    """Final test MSE ÷ Var(y_test) per range and net, the noise floor on that scale, and how far the fits reach."""
    models = models_of(results)
    curves = {model: sweep_curves(results, model) for model in models}
    ranges, _, floors = curves[models[0]]

    def reach(r: float, model: str) -> float:  # largest prediction ÷ largest test target, mean over seeds
        runs = runs_of(results, r, model)
        return mean_std([max(run["predictions"]) / max(dataset_of(results, r, run["seed"])["y_test"]) for run in runs])[
            0
        ]

    paired = "my_bn" in models and "plain" in models
    lines = [
        f"Final test MSE ÷ Var(y_test), mean ± std over {len(results['config']['seeds'])} seeds "
        f"({source(results)}); 1 is what predicting the mean of y scores. *MyBN × plain*: MyBN's final test MSE "
        "over the plain net's, seed by seed: the geometric mean of the ratios and its 95% t-interval. *Reach* is "
        "the largest prediction divided by the largest test target, mean over seeds.",
        "",
    ]
    rows = []
    for i, r in enumerate(ranges):
        cells = [f"{curves[m][1][:, i].mean():.3f} ± {curves[m][1][:, i].std():.3f}" for m in models]
        cells += [f"{reach(r, m):.2f}" for m in models]
        cells += [versus(results, r, "my_bn", "plain")] if paired else []
        rows.append([f"{r:g}", f"{floors[i]:.3f}", *cells])
    header = ("R", "noise floor", *(label(m) for m in models), *(f"reach, {label(m)}" for m in models),
              *(["MyBN × plain"] if paired else []))
    return "\n".join([*lines, table(header, rows)])


def check_scaled(results: dict) -> None:
    if results["config"]["noise_scaled"] is None:
        raise ValueError("the sweep's figure and table need runs with --noise-scaled: rerun `python train.py sweep`")


SweepSettings = Regression.preset("SweepSettings", __name__, ranges=[0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0],
                                  noise_scaled=0.1, diagnostics=False)


EXPERIMENT = Experiment(
    name="sweep",
    doc=__doc__,
    settings=SweepSettings,
    run=run_experiment,
    figures=lambda results: {"sweep.png": partial(plot_sweep, results)},
    tables=lambda results: {"sweep-table": sweep_table(results)},
    check=check_scaled,
)
