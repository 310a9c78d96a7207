"""running_stats: how much of the batch-norm nets' test error comes from the running statistics?

In eval mode a batch-norm layer normalises with moving averages of the batch statistics, which
trail the weights (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"). This repository uses the
write-up's momentum 0.5; PyTorch's default is 0.1. After every epoch each MyBN net is evaluated on
the test set three ways:

- ``running``: eval mode with its moving averages (the test MSE of every other experiment);
- ``precise``: eval mode with precise statistics: the weights frozen, each layer's mean and
  variance over the whole training set (one forward of all 1000 training inputs in training mode);
- ``train_mode``: training mode on the test set, i.e. normalised with the test set's own statistics.

Each three ways on two test sets. The experiments' own test inputs lie on an even grid over
(-R, R), like the training inputs, so their batch statistics are the training set's nearly exactly,
and test-batch statistics cannot differ from precise ones. So each is also evaluated on an
*off-grid* test set (``off_grid``): ``OFF_GRID`` inputs drawn uniformly at random in (-R, R), one
fixed set per range (generator seed ``OFF_GRID_SEED``), with targets y = a·x² + b and the range's
noise: a test batch whose statistics differ from the training set's by sampling, as a real one's do.

This is about evaluation, not about why batch norm helps training: the running statistics never
enter a training step. The runs the verdict reads (both nets on (-5, 5)) also train for each of
``long_epochs``, kept in the results' ``longer`` (a run's curves are as long as its training).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from experiments.record import Experiment, runs_with
from lab import stats
from lab.data import Dataset, target
from lab.pages import table
from lab.plotting import COLOURS, label, range_text, save, subplots
from lab.probe import Probe
from lab.regression import Regression, Scaling, models_of, ranges_of, run_with_longer, runs_of
from lab.results import at_budget, budgets, longer_lists, rounded, source
from lab.settings import TEN_SEEDS, flag, positive_int
from lab.stats import mean_std
from lab.verdicts import HARD, Part, Verdict, paired, per_budget
from my_bn import MyBN

MODES = {"running": "moving averages", "precise": "precise statistics", "train_mode": "test-batch statistics"}
STYLES = {"running": "-", "precise": "--", "train_mode": ":"}
OFF_GRID, OFF_GRID_SEED = 100, 2021  # the off-grid test set: its size, and the seed of its inputs and noise


def off_grid(data: Dataset, a: float = 1.0, b: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The off-grid test set of ``data``'s range: ``OFF_GRID`` inputs uniform in (-R, R), their targets
    with the range's noise, drawn from ``OFF_GRID_SEED`` in float64 and cast to the data's dtype."""
    gen = torch.Generator().manual_seed(OFF_GRID_SEED)
    r = data.input_range
    x = (2 * torch.rand(OFF_GRID, 1, generator=gen, dtype=torch.float64) - 1) * r
    y = target(x, a, b) + data.noise_std * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return x.to(data.x_test.dtype), y.to(data.y_test.dtype)


class RunningStatsProbe(Probe):
    """The test MSE of the net in each of ``MODES``, at initialisation and after every epoch."""

    name = "running_stats"

    def __init__(self, net: nn.Module, data, config=None):
        from lab.nets import MLP_MODELS

        self.net, self.data = net, data
        self.off_grid = off_grid(data, *((config.a, config.b) if config is not None else ()))
        self.scaling = Scaling.for_model(MLP_MODELS[net.model], data)
        self.records: dict[str, list[float]] = {mode: [] for mode in (*MODES, *(f"off_grid_{m}" for m in MODES))}
        self.epoch(0)

    def epoch(self, epoch: int) -> None:
        tests = [(self.data.x_test, self.data.y_test), self.off_grid]
        for prefix, values in zip(("", "off_grid_"), test_mse_by_mode(self.net, self.data, self.scaling, tests),
                                  strict=True):
            for mode, value in values.items():
                self.records[prefix + mode].append(value)

    def results(self) -> dict:
        return {mode: rounded(values) for mode, values in self.records.items()}


@torch.no_grad()
def test_mse_by_mode(net: nn.Module, data, scaling: Scaling, tests: list[tuple] | None = None
                     ) -> list[dict[str, float]]:
    """Per test set of ``tests`` ((x, y) pairs; default: the data's test set alone), the test MSE with
    moving averages, with precise statistics, and in training mode; ``net`` untouched."""
    device = next(net.parameters()).device
    precise = copy.deepcopy(net).train()
    for layer in precise.modules():
        if isinstance(layer, (MyBN, nn.BatchNorm1d)):
            layer.momentum = 1.0  # running statistics <- this batch's: the whole training set's
    precise(scaling.x(data.x_train.to(device)))
    training = net.training

    def mse(model: nn.Module, mode: bool, x: torch.Tensor, y: torch.Tensor) -> float:
        model.train(mode)
        return nn.functional.mse_loss(scaling.y_back(model(scaling.x(x.to(device)))), y.to(device)).item()

    out = []
    for x, y in tests or [(data.x_test, data.y_test)]:
        # train mode on a copy: its running statistics move, the net's must not
        out.append({"running": mse(net, False, x, y), "precise": mse(precise, False, x, y),
                    "train_mode": mse(copy.deepcopy(net), True, x, y)})
    net.train(training)
    return out


def curves(results: dict, r: float, model: str, mode: str) -> torch.Tensor:
    """(seeds, epochs + 1) test MSE of ``model`` evaluated in ``mode`` (``off_grid_`` + a mode: on the
    off-grid test set)."""
    return torch.tensor([run_["running_stats"][mode] for run_ in runs_of(results, r, model)], dtype=torch.float64)


def plot_running_stats(results: dict, outfile: Path) -> None:
    """Per range (columns) and test set (rows: the experiments' grid, off the grid): the test MSE along
    training in each of ``MODES``, mean over seeds."""
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(2, len(ranges), figsize=(6.5 * len(ranges), 9.2), squeeze=False)
    for row, (prefix, test) in zip(axes, (("", "the test set (grid)"), ("off_grid_", "off-grid test set")),
                                   strict=True):
        for ax, r in zip(row, ranges, strict=True):
            for model in models_of(results):
                for mode, text in MODES.items():
                    values = curves(results, r, model, prefix + mode)
                    ax.plot(range(values.shape[1]), values.mean(0), STYLES[mode], color=COLOURS[model][0], lw=2,
                            marker="o", ms=3, label=f"{label(model)}: {text}")
            ax.set(yscale="log", xlabel="epoch", ylabel="test MSE, mean over seeds",
                   title=f"Test MSE by the statistics used, {test}, x in {range_text(r)}")
            ax.legend(fontsize=7)
    save(fig, outfile)


def check_runs(results: dict) -> None:
    """Every run (the longer budgets' too) holds each mode's test MSE on both test sets."""
    keys = {prefix + mode for prefix in ("", "off_grid_") for mode in MODES}
    for runs in (results["runs"], *longer_lists(results).values()):
        runs_with(("running_stats",), "its probe's runs")({"runs": runs})
        if any(not isinstance(run_["running_stats"], dict) or not keys <= run_["running_stats"].keys()
               for run_ in runs):
            raise ValueError(f"its runs must hold {', '.join(sorted(keys))}: rerun `python train.py running_stats`")


def wobble(values: torch.Tensor) -> float:
    """How much a test curve jumps from epoch to epoch over the second half of training: the mean of
    |log(MSE_e / MSE_{e-1})|, mean over seeds (0 for a smooth curve; 0.69 for jumps of 2×)."""
    half = values[:, values.shape[1] // 2 :].log()
    return (half[:, 1:] - half[:, :-1]).abs().mean().item()


def running_stats_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"{config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds "
        f"({source(results)}); the final test MSE on the experiments' test set (on an even grid, as the training "
        f"inputs) and on the off-grid test set ({OFF_GRID} inputs uniform in (-R, R)). *Wobble*: mean |log| of the "
        "test MSE's ratio from one epoch to the next over the second half of training, on the experiments' test set "
        "(0: smooth; 0.69: jumps of 2×).",
        "",
    ]
    rows = []
    for r in reversed(ranges_of(results)):
        for model in models_of(results):
            finals = [mean_std(curves(results, r, model, prefix + mode)[:, -1].tolist())
                      for prefix in ("", "off_grid_") for mode in MODES]
            cells = [f"{m:.4g} ± {s:.2g}" for m, s in finals]
            cells += [f"{wobble(curves(results, r, model, mode)):.2f}" for mode in MODES]
            rows.append([range_text(r), label(model), *cells])
    lines.append(table(("inputs", "net", *(f"{what}, {text}" for what in ("final test MSE", "off grid", "wobble")
                                           for text in MODES.values())), rows))
    for epochs in budgets(results)[1:]:
        view = at_budget(results, epochs)
        ratios = ", ".join(f"momentum {m} {precise_over_running(view, HARD, model).ratio_text()}"
                           for model, m in MOMENTA.items())
        lines += ["", f"Trained {epochs} epochs (the runs the verdict reads: both nets on {range_text(HARD)}), the "
                  f"final test MSE off grid, seed by seed: precise / moving averages {ratios}; test-batch / precise "
                  f"{final_ratio(view, HARD, 'my_bn', 'off_grid_train_mode', 'off_grid_precise').ratio_text()}."]
    return "\n".join(lines)


MOMENTA = {"my_bn": "0.5", "my_bn_m01": "0.1"}  # the two MyBN nets, by their momentum
PRECISE_BETTER = stats.Rule(0.0, "below")  # log(precise / moving averages) of the final test MSE
BATCH_WORSE = stats.Rule(0.0, "above")  # log(test-batch / precise) of the final test MSE
RULES = {"precise beats moving averages": PRECISE_BETTER, "test-batch worse than precise": BATCH_WORSE}


def final_ratio(results: dict, r: float, model: str, mode: str, baseline: str) -> stats.Interval:
    """The paired log-ratio of the final test MSE evaluated in ``mode`` over that in ``baseline``."""
    a, b = ({run_["seed"]: run_["running_stats"][m][-1] for run_ in runs_of(results, r, model)}
            for m in (mode, baseline))
    return stats.paired_log_ratio(*paired(a, b))


def precise_over_running(results: dict, r: float, model: str, prefix: str = "off_grid_") -> stats.Interval:
    """The paired log-ratio of the final test MSE with precise statistics over that with moving averages
    (on the off-grid test set; ``prefix=""``: on the experiments' test set)."""
    return final_ratio(results, r, model, prefix + "precise", prefix + "running")


def running_stats_verdict(results: dict) -> Verdict:
    """On the off-grid test set: do precise statistics beat the moving averages (per momentum), and are
    the test batch's own statistics worse than precise ones? At each budget."""
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not all(runs_of(view, HARD, model) for model in MOMENTA):
            return "", []
        measured, parts = [], []
        for model, momentum in MOMENTA.items():
            ci = precise_over_running(view, HARD, model)
            measured.append(f"precise / moving averages, momentum {momentum} {ci.ratio_text()}")
            parts.append(Part(f"precise beats moving averages, momentum {momentum} ({budget})", "log(precise / "
                              f"moving averages) of the final test MSE, momentum {momentum}", ci, PRECISE_BETTER,
                              budget, scale="log-ratio"))
        batch = final_ratio(view, HARD, "my_bn", "off_grid_train_mode", "off_grid_precise")
        measured.append(f"test-batch / precise {batch.ratio_text()}")
        parts.append(Part(f"test-batch statistics worse than precise ({budget})", "log(test-batch / precise) of the "
                          "final test MSE", batch, BATCH_WORSE, budget, scale="log-ratio"))
        return ", ".join(measured), parts

    measured, parts = per_budget(results, read)
    same = curves(results, HARD, "my_bn", "precise").equal(curves(results, HARD, "my_bn_m01", "precise"))
    note = " (the weights are the same at both momenta: the running statistics never enter training)" if same else ""
    rule = ("per seed, the log-ratio of the final test MSE on the off-grid test set: precise / moving averages, "
            "holds where the interval lies below 0, does not hold where it lies above, each momentum on its own; "
            "test-batch / precise statistics, holds where the interval lies above 0; else not decided; at each budget")
    return Verdict("Running statistics that lag (Wu & Johnson 2021): about evaluation, not training",
                   "in eval mode, statistics precise for the final weights beat the moving averages, and the test "
                   "batch's own statistics are worse than either",
                   f"final test MSE on {range_text(HARD)}, off-grid test set: " + measured + note, rule, parts,
                   "[running_stats](docs/running_stats.md)")


_RunningStats = Regression.preset("_RunningStats", __name__, models=["my_bn", "my_bn_m01"], diagnostics=False,
                                  seeds=TEN_SEEDS)


@dataclass
class RunningStatsSettings(_RunningStats):
    long_epochs: list[int] = flag([30], "longer budgets, in epochs: the runs the verdict reads (both nets on "
                                  "(-5, 5)) train at each too; none: --long-epochs alone", type=positive_int, nargs="*",
                                  metavar="E")


def run(config: RunningStatsSettings, log=print) -> dict:
    """Every (range, net, seed) at the settings' epochs; and at each of ``long_epochs`` the runs the verdict
    reads, both nets on (-5, 5), in the results' ``longer`` (``regression.run_with_longer``)."""
    return run_with_longer(config, log, RunningStatsProbe, HARD, tuple(MOMENTA))


EXPERIMENT = Experiment(
    name="running_stats",
    doc=__doc__,
    settings=RunningStatsSettings,
    run=run,
    figures=lambda results: {"running_stats.png": partial(plot_running_stats, results)},
    tables=lambda results: {"running-stats-table": running_stats_table(results)},
    check=check_runs,
    verdicts=lambda results: [running_stats_verdict(results)],
)
