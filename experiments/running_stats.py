"""running_stats: how much of the batch-norm nets' test error comes from the running statistics?

In eval mode a batch-norm layer normalises with moving averages of the batch statistics, which
trail the weights (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"). This repository uses the
write-up's momentum 0.5; PyTorch's default is 0.1. After every epoch each MyBN net is evaluated on
the test set three ways:

- ``running``: eval mode with its moving averages (the test MSE of every other experiment);
- ``precise``: eval mode with precise statistics: the weights frozen, each layer's mean and
  variance over the whole training set (one forward of all 1000 training inputs in training mode);
- ``train_mode``: training mode on the test set, i.e. normalised with the test set's own statistics.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import torch
from torch import nn

import stats
from experiments.record import Experiment, runs_with
from explanations import HARD, Verdict, bold, paired
from my_bn import MyBN
from plotting import COLOURS, label, range_text, save, subplots
from probe import Probe
from results import mean_std, models_of, ranges_of, rounded, runs_of, source
from training import Scaling, run_experiment

MODES = {"running": "moving averages", "precise": "precise statistics", "train_mode": "test-batch statistics"}
STYLES = {"running": "-", "precise": "--", "train_mode": ":"}


class RunningStatsProbe(Probe):
    """The test MSE of the net in each of ``MODES``, at initialisation and after every epoch."""

    name = "running_stats"

    def __init__(self, net: nn.Module, data, config=None):
        from bn_pytorch import VARIANTS

        self.net, self.data = net, data
        self.scaling = Scaling.for_variant(VARIANTS[net.model], data)
        self.records: dict[str, list[float]] = {mode: [] for mode in MODES}
        self.epoch(0)

    def epoch(self, epoch: int) -> None:
        for mode, value in test_mse_by_mode(self.net, self.data, self.scaling).items():
            self.records[mode].append(value)

    def results(self) -> dict:
        return {mode: rounded(values) for mode, values in self.records.items()}


@torch.no_grad()
def test_mse_by_mode(net: nn.Module, data, scaling: Scaling) -> dict[str, float]:
    """Test MSE with moving averages, with precise statistics, and in training mode; ``net`` untouched."""
    device = next(net.parameters()).device
    x_train, x_test, y_test = (scaling.x(data.x_train.to(device)), scaling.x(data.x_test.to(device)),
                               data.y_test.to(device))  # fmt: skip

    def mse(model: nn.Module, training: bool) -> float:
        model.train(training)
        return nn.functional.mse_loss(scaling.y_back(model(x_test)), y_test).item()

    out = {"running": mse(copy.deepcopy(net), False)}
    precise = copy.deepcopy(net).train()
    for layer in precise.modules():
        if isinstance(layer, (MyBN, nn.BatchNorm1d)):
            layer.momentum = 1.0  # running statistics <- this batch's: the whole training set's
    precise(x_train)
    out["precise"] = mse(precise, False)
    out["train_mode"] = mse(copy.deepcopy(net), True)
    return out


def curves(results: dict, r: float, model: str, mode: str) -> torch.Tensor:
    """(seeds, epochs + 1) test MSE of ``model`` evaluated in ``mode``."""
    return torch.tensor([run_["running_stats"][mode] for run_ in runs_of(results, r, model)], dtype=torch.float64)


def plot_running_stats(results: dict, outfile: Path) -> None:
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(1, len(ranges), figsize=(6.5 * len(ranges), 4.6), squeeze=False)
    for ax, r in zip(axes[0], ranges, strict=True):
        for model in models_of(results):
            for mode, text in MODES.items():
                values = curves(results, r, model, mode)
                ax.plot(range(values.shape[1]), values.mean(0), STYLES[mode], color=COLOURS[model][0], lw=2,
                        marker="o", ms=3, label=f"{label(model)}: {text}")  # fmt: skip
        ax.set(yscale="log", xlabel="epoch", ylabel="test MSE, mean over seeds",
               title=f"Test MSE by the statistics used, x in {range_text(r)}")  # fmt: skip
        ax.legend(fontsize=7)
    save(fig, outfile)


def wobble(values: torch.Tensor) -> float:
    """How much a test curve jumps from epoch to epoch over the second half of training: the mean of
    |log(MSE_e / MSE_{e-1})|, mean over seeds (0 for a smooth curve; 0.69 for jumps of 2×)."""
    half = values[:, values.shape[1] // 2 :].log()
    return (half[:, 1:] - half[:, :-1]).abs().mean().item()


def running_stats_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"{config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds "
        f"({source(results)}). *Wobble*: mean |log| of the test MSE's ratio from one epoch to "
        "the next over the second half of training (0: smooth; 0.69: jumps of 2×).",
        "",
        "| inputs | net | "
        + " | ".join(f"final test MSE, {text}" for text in MODES.values())
        + " | "
        + " | ".join(f"wobble, {text}" for text in MODES.values())
        + " |",
        "|---|---|" + "---|" * (2 * len(MODES)),
    ]
    for r in reversed(ranges_of(results)):
        for model in models_of(results):
            finals = [mean_std(curves(results, r, model, mode)[:, -1].tolist()) for mode in MODES]
            cells = [f"{m:.4g} ± {s:.2g}" for m, s in finals]
            cells += [f"{wobble(curves(results, r, model, mode)):.2f}" for mode in MODES]
            lines.append(f"| {range_text(r)} | {label(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MOMENTA = {"my_bn": "0.5", "my_bn_m01": "0.1"}  # the two MyBN nets, by their momentum


def precise_over_running(results: dict, r: float, model: str) -> stats.Interval:
    """The paired log-ratio of the final test MSE with precise statistics over that with moving averages."""
    precise, running = ({run_["seed"]: run_["running_stats"][mode][-1] for run_ in runs_of(results, r, model)}
                        for mode in ("precise", "running"))  # fmt: skip
    return stats.paired_log_ratio(*paired(precise, running))


def running_stats_verdict(results: dict) -> Verdict:
    measured, answers = [], []
    for model, momentum in MOMENTA.items():
        ci = precise_over_running(results, HARD, model)
        measured.append(f"momentum {momentum} {ci.ratio_text()}")
        answers.append(f"momentum {momentum}: {bold(stats.decide(ci, 0.0, 'below'))}")
    same = curves(results, HARD, "my_bn", "precise").equal(curves(results, HARD, "my_bn_m01", "precise"))
    note = " (the weights are the same at both momenta: the running statistics never enter training)" if same else ""
    rule = ("per seed, log(precise / moving averages) of the final test MSE; holds where the interval lies below 0, "
            "does not hold where it lies above, else not decided; each momentum on its own")
    return Verdict("Running statistics that lag (Wu & Johnson 2021)",
                   "eval with statistics precise for the final weights beats the moving averages",
                   f"final test MSE on {range_text(HARD)}, precise / moving averages: " + "; ".join(measured), rule,
                   "; ".join(answers) + note, "[running_stats](docs/running_stats.md)")  # fmt: skip


EXPERIMENT = Experiment(
    name="running_stats",
    doc=__doc__,
    preset={"models": ["my_bn", "my_bn_m01"], "diagnostics": False},
    run=partial(run_experiment, probe=RunningStatsProbe),
    figures=lambda results: {"running_stats.png": partial(plot_running_stats, results)},
    tables=lambda results: {"running-stats-table": running_stats_table(results)},
    check=runs_with(("running_stats",), "its probe's runs"),
    verdicts=lambda results: [running_stats_verdict(results)],
)
