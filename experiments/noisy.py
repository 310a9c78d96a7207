"""noisy: Santurkar et al.'s (2018) test of the covariate-shift explanation. If batch norm worked by
keeping each layer's input distribution steady, a net whose distributions are made to move on
purpose should lose its benefit. Their Algorithm 1 adds noise whose mean and scale change every step
(``bn_pytorch.NonStationaryNoise``) after each batch-norm layer; the plain net gets the same noise
after each Linear, so that the noise itself is controlled for.

Where the noise goes: after γ/β, on the layer's output, just before the tanh. That is the input
distribution of the next nonlinearity, the one the covariate-shift explanation is about, and
there the noise cannot be undone by the layer itself (before γ/β, γ would scale it with the
signal). Only in training, like dropout: the test MSE is measured without it.
"""

from __future__ import annotations

from pathlib import Path

from diagnostics import SATURATED, start_end
from plotting import Figures, label, mse_panel, range_text, saturation_panel, save, subplots
from results import models_of, ranges_of, require_in_runs, runs_of, source, summarize

PRESET = {"models": ["my_bn", "my_bn_noisy", "plain", "plain_noisy"]}


def check(experiments: dict[str, dict]) -> None:
    require_in_runs(experiments, "noisy", ("diagnostics",), "diagnostics")


def figures(experiments: dict[str, dict]) -> Figures:
    return {"noisy.png": lambda out: plot_noisy(experiments["noisy"], out)}


def tables(experiments: dict[str, dict]) -> dict[str, str]:
    return {"noisy-table": noisy_table(experiments["noisy"])}


def plot_noisy(results: dict, outfile: Path) -> None:
    """Per range: test MSE, and the saturation of the last block, with and without the noise."""
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(len(ranges), 2, figsize=(13, 4.4 * len(ranges)), squeeze=False)
    for (ax_mse, ax_sat), r in zip(axes, ranges, strict=True):
        models = models_of(results)
        mse_panel(ax_mse, results, r, models)
        saturation_panel(ax_sat, results, r, models, f"Saturation of the last hidden block, x in {range_text(r)}")
        ax_mse.legend(fontsize=7)
    save(fig, outfile)


def noisy_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"{config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds ({source(results)}); "
        f"saturation is the fraction of units with |tanh| > {SATURATED} in the last block's training batch, mean "
        "over seeds, at the first step → at the last.",
        "",
        "| inputs | net | final test MSE | final / noise floor | saturation, block 4 |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(summarize(results), key=lambda row: -row["range"]):
        runs = runs_of(results, row["range"], row["model"])
        lines.append(
            f"| {range_text(row['range'])} | {label(row['model'])} | {row['mean']:.4g} ± {row['std']:.2g} "
            f"| {row['mean'] / row['noise_floor']:.3g} | {start_end(runs, 'saturation', -1, '.2f')} |"
        )
    return "\n".join(lines)
