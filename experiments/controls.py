"""controls: the plain net on (-5, 5) with one thing changed (inputs or targets standardised, batch
norm before the first tanh only), beside the main nets: which change rescues it?"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from experiments.record import Experiment, runs_with
from lab.diagnostics import start_end
from lab.nets import CONTROLS, MODELS
from lab.pages import table
from lab.plotting import label, mse_panel, range_text, saturation_panel, save, subplots
from lab.regression import Regression, fit_spread, models_of, ranges_of, run_experiment, runs_of, summarize
from lab.results import source
from lab.verdicts import versus


def plot_controls(results: dict, outfile: Path) -> None:
    """The plain net with one thing changed, beside the main nets: test MSE, and last-block saturation."""
    r = ranges_of(results)[0]
    models = models_of(results)
    fig, (ax_mse, ax_sat) = subplots(1, 2, figsize=(13, 4.8))
    mse_panel(ax_mse, results, r, models)
    saturation_panel(ax_sat, results, r, models, "Saturation of the last hidden block")
    ax_mse.legend(fontsize=7, ncol=2)
    save(fig, outfile)



def controls_table(results: dict) -> str:
    """Per variant: final test MSE, how many seeds fit the curve, and saturation at start and end."""
    r = ranges_of(results)[0]
    lines = [
        f"x in {range_text(r)}, {results['config']['epochs']} epochs, mean ± std over "
        f"{len(results['config']['seeds'])} seeds ({source(results)}). *× MyBN*: the net's final test MSE over "
        "MyBN's, seed by seed (the same initial weights and batches): the geometric mean of the ratios and its 95% "
        "t-interval. A seed *fits* when its fit spread is above 0.5; saturation is the fraction of units with "
        "|tanh| > 0.99 in the training batch, mean over seeds, at the first step → at the last.",
        "",
    ]
    rows = []
    for row in summarize(results):
        runs = runs_of(results, r, row["model"])
        fits = sum(fit_spread(results, run) > 0.5 for run in runs)
        sat = [start_end(runs, "saturation", b, ".2f") for b in (0, -1)]
        rows.append([label(row["model"]), f"{row['mean']:.4g} ± {row['std']:.2g}",
                     versus(results, r, row["model"], "my_bn"),
                     f"{row['mean'] / row['noise_floor']:.3g}", f"{fits} of {len(runs)}", *sat])
    return "\n".join([*lines, table(("net", "final test MSE", "× MyBN", "final / floor", "seeds that fit",
                                      "saturation, block 1", "saturation, block 4"), rows)])


ControlsSettings = Regression.preset("ControlsSettings", __name__, ranges=[5.0], models=[*MODELS, *CONTROLS])


EXPERIMENT = Experiment(
    name="controls",
    doc=__doc__,
    settings=ControlsSettings,
    run=run_experiment,
    figures=lambda results: {"controls.png": partial(plot_controls, results)},
    tables=lambda results: {"controls-table": controls_table(results)},
    check=runs_with(("diagnostics",), "diagnostics"),
)
