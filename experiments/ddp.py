"""ddp: the float64 batch-norm nets trained over two processes (DistributedDataParallel over gloo),
each process its slice of every batch: MyBN(sync=True), nn.BatchNorm1d and MyBN with per-process
statistics, against the same nets in one process (the float64 experiment)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from experiments.record import Experiment
from lab.pages import table
from lab.plotting import COLOURS, label, range_text, save, subplots
from lab.regression import Regression, models_of, ranges_of, relative_gap, run_experiment, runs_of
from lab.results import source
from lab.stats import mean_std

SINGLE_PROCESS_TWIN = {"my_bn_local": "my_bn"}  # in one process, per-process statistics are the batch's


def ddp_gaps(ddp: dict, single: dict, key: str) -> list[tuple[str, torch.Tensor]]:
    """Per multi-process run: (model, |multi − single| / single of ``key`` along training), against the
    single-process run of the same net, range and seed."""
    if ddp["config"]["dtype"] != single["config"]["dtype"]:
        raise ValueError("the multi-process and single-process results to compare must have the same dtype")
    gaps = []
    for run in ddp["runs"]:
        twin = SINGLE_PROCESS_TWIN.get(run["model"], run["model"])
        ref = [r for r in runs_of(single, run["range"][1], twin) if r["seed"] == run["seed"]]
        if not ref:
            raise ValueError(f"no single-process {twin} run for range {run['range'][1]:g} and seed {run['seed']}")
        ref = ref[0]
        gaps.append((run["model"], relative_gap(run[key], ref[key])))
    return gaps


def plot_ddp(ddp: dict, single: dict, outfile: Path) -> None:
    """How far each net trained over several processes drifts from the same net trained in one."""
    fig, ax = subplots(figsize=(7.5, 4.4))
    labelled = set()
    for model, gap in ddp_gaps(ddp, single, "train_loss"):
        colour, ls = COLOURS[model]
        text = None if model in labelled else label(model)
        if model == "my_bn_local" and text:  # it normalises each process's half alone, as nn.BatchNorm1d does
            text += " (on nn.BatchNorm1d's curve)"
        labelled.add(model)
        wide = model == "torch_bn"  # drawn wide and light, so that the curve on it shows
        ax.plot(range(1, len(gap) + 1), gap.clamp_min(1e-17), ls, color=colour, lw=4 if wide else 0.9,
                alpha=0.3 if wide else 0.9, label=text)
    processes = ddp["environment"]["processes"]
    ax.set(yscale="log", xlabel="training step",
           ylabel=f"|loss({processes} processes) − loss(1)| / loss(1)",
           title=f"Training loss, {processes} processes against 1, same batches ({ddp['config']['dtype']})")
    ax.legend(fontsize=8)
    save(fig, outfile)


def ddp_table(ddp: dict, single: dict) -> str:
    """Per range and net: final test MSE in one process and in several, and how far apart the runs get."""
    processes = ddp["environment"]["processes"]
    gaps_per_run = zip(ddp["runs"], ddp_gaps(ddp, single, "train_loss"), strict=True)
    loss_gaps = {(run["range"][1], run["model"], run["seed"]): gap for run, (_, gap) in gaps_per_run}
    lines = [
        f"{ddp['config']['dtype']}, mean ± std over {len(ddp['config']['seeds'])} seeds "
        f"({source(ddp)} against {source(single)}); the gaps are relative, "
        "the largest over the seeds.",
        "",
    ]
    rows = []
    for r in ranges_of(ddp):
        for model in models_of(ddp):
            seeds = ddp["config"]["seeds"]  # the single-process runs of the same seeds
            one = mean_std([run["test_mse"][-1] for run in runs_of(single, r, SINGLE_PROCESS_TWIN.get(model, model))
                            if run["seed"] in seeds])
            many = mean_std([run["test_mse"][-1] for run in runs_of(ddp, r, model)])
            gaps = [g for (rr, m, _), g in loss_gaps.items() if (rr, m) == (r, model)]
            rows.append([range_text(r), label(model), f"{one[0]:.4g} ± {one[1]:.2g}", f"{many[0]:.4g} ± {many[1]:.2g}",
                         f"{max(g[0].item() for g in gaps):.1e}", f"{max(g.max().item() for g in gaps):.1e}"])
    return "\n".join([*lines, table(("inputs", "net", "final test MSE, 1 process",
                                      f"final test MSE, {processes} processes", "training loss, gap at step 1",
                                      "largest gap over training"), rows)])


# two seeds: a check of arithmetic, not a claim over seeds
DdpSettings = Regression.preset("DdpSettings", __name__, nproc=2, dtype="float64", seeds=[0, 1], ranges=[5.0],
                                models=["torch_bn", "my_bn", "my_bn_local"], diagnostics=False)


EXPERIMENT = Experiment(
    name="ddp",
    doc=__doc__,
    settings=DdpSettings,
    run=run_experiment,
    figures=lambda ddp, float64: {"ddp.png": partial(plot_ddp, ddp, float64)},
    tables=lambda ddp, float64: {"ddp-table": ddp_table(ddp, float64)},
    needs=("float64",),
)
