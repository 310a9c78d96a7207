"""float64: the two batch-norm nets of the main experiment again, in float64, where MyBN and
nn.BatchNorm1d should stay together step for step; beside the float32 runs, where they drift apart.

Its figure and table put the main experiment's float32 runs beside these.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from experiments.record import Experiment
from lab.nets import BN_PAIR
from lab.pages import table
from lab.plotting import range_text, save, subplots
from lab.regression import Regression, models_of, ranges_of, relative_gap, run_experiment, runs_of
from lab.stats import mean_std

DTYPE_COLOURS = {"float32": "#D62728", "float64": "#1F77B4"}


def relative_gaps(results: dict, key: str) -> list[tuple[float, int, torch.Tensor]]:
    """|MyBN − BatchNorm1d| / BatchNorm1d of ``key`` per (range, seed), along training."""
    gaps = []
    for r in ranges_of(results):
        mine = {run["seed"]: run[key] for run in runs_of(results, r, "my_bn")}
        for run in runs_of(results, r, "torch_bn"):
            if run["seed"] not in mine:
                raise ValueError(f"no my_bn run for range {r:g} and seed {run['seed']} beside the torch_bn one")
            gaps.append((r, run["seed"], relative_gap(mine[run["seed"]], run[key])))
    return gaps


# ----------------------------------------------------------------------------------------------
# Figures: each draws from results into outfile


def by_dtype(float64: dict, main: dict) -> dict[str, dict]:
    """The main and the float64 results, keyed by their dtype."""
    pair = {results["config"]["dtype"]: results for results in (main, float64)}
    if len(pair) != 2 or any(set(BN_PAIR) - set(models_of(results)) for results in pair.values()):
        raise ValueError("the parity figure needs torch_bn and my_bn runs in a float32 and a float64 results file")
    return dict(sorted(pair.items()))


def plot_parity(by_dtype: dict[str, dict], outfile: Path) -> None:
    """How far the MyBN net drifts from the BatchNorm1d net, step by step, in float32 and float64."""
    fig, ax = subplots(figsize=(7.5, 4.4))
    for dtype, results in by_dtype.items():
        gaps = relative_gaps(results, "train_loss")
        for i, (_, _, gap) in enumerate(gaps):
            text = f"{dtype} ({len(gaps)} runs: ranges × seeds)" if i == 0 else None
            steps = range(1, len(gap) + 1)
            ax.plot(steps, gap.clamp_min(1e-17), color=DTYPE_COLOURS[dtype], lw=0.7, alpha=0.5, label=text)
    ax.set(yscale="log", xlabel="training step", ylabel="|loss(MyBN) − loss(BatchNorm1d)| / loss(BatchNorm1d)",
           title="Same weights, same batches: MyBN vs nn.BatchNorm1d")
    ax.legend(fontsize=8)
    save(fig, outfile)


def parity_table(pair: dict[str, dict]) -> str:
    rows = []
    for dtype, results in pair.items():
        loss_gaps, mse_gaps = relative_gaps(results, "train_loss"), relative_gaps(results, "test_mse")
        for r in ranges_of(results):
            first = max(gap[0].item() for rr, _, gap in loss_gaps if rr == r)
            final = max(gap[-1].item() for rr, _, gap in mse_gaps if rr == r)
            ref, mine = (mean_std([run["test_mse"][-1] for run in runs_of(results, r, m)]) for m in BN_PAIR)
            rows.append([range_text(r), dtype, f"{first:.1e}", f"{ref[0]:.4g} ± {ref[1]:.2g}",
                         f"{mine[0]:.4g} ± {mine[1]:.2g}", f"{final:.1e}"])
    return table(("inputs", "dtype", "first-step loss, max rel. gap", "final test MSE, BatchNorm1d",
                  "final test MSE, MyBN", "final test MSE, max rel. gap over seeds"), rows)


Float64Settings = Regression.preset("Float64Settings", __name__, dtype="float64", models=["torch_bn", "my_bn"],
                                    diagnostics=False)


EXPERIMENT = Experiment(
    name="float64",
    doc=__doc__,
    settings=Float64Settings,
    run=run_experiment,
    figures=lambda float64, main: {"parity.png": partial(plot_parity, by_dtype(float64, main))},
    tables=lambda float64, main: {"parity-table": parity_table(by_dtype(float64, main))},
    needs=("main",),
)
