"""landscape: is the loss smoother with batch norm? Santurkar et al. (2018, §3.2, Appendix A.2.2).

The nets train with plain SGD (under Adam the step is not η·g). Every ``EVERY`` steps, with g the
gradient on the step's batch, the probe moves the parameters to θ − η·g for each η of ``FACTORS``
times the learning rate (½ to 4 times, as in the paper) and measures, on the same batch:

- the spread of the loss: the lowest and highest L(θ − η·g);
- gradient predictiveness: ‖∇L(θ) − ∇L(θ − η·g)‖, its lowest and highest over η;
- effective β-smoothness: the highest over η of ‖∇L(θ) − ∇L(θ − η·g)‖ / ‖η·g‖.

Gradients are over all parameters. Batch norm runs in training mode on the probing batch, with its
running statistics put back after the probe, as are the parameters and the optimiser's state
(``training.preserved``): a run with probes trains exactly like one without.

The learning rate, per range (``LR``): the largest of the lr experiment's SGD grid at which every
seed of both nets trains within 100 epochs; tests/test_readme.py checks that against the lr results.
``--lr`` replaces it for every range (a range without an entry in ``LR`` needs it); each run records
the rate it trained at, and the results' config the one given (null: the rates of ``LR``).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import torch
from torch import nn

import progress
import stats
from experiments.record import Experiment, runs_with
from explanations import EASY, HARD, Verdict, bold, ratio
from plotting import band, label, range_text, save, stacked, subplots
from probe import Probe, Step, every, preserved
from results import models_of, ranges_of, rounded, runs_of, source
from training import run_experiment

LR = {5.0: 0.03, 1.0: 0.3}  # plain SGD learning rate per input range R
FACTORS = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]  # the step sizes probed, times the learning rate
EVERY = 16  # steps between probes: about one per epoch
MEASURES = {
    "loss_spread": "loss spread: max − min of L(θ − ηg)",
    "gdiff_max": "‖∇L(θ) − ∇L(θ − ηg)‖, max over η",
    "beta": "effective β-smoothness",
}


class LandscapeProbe(Probe):
    """The three measures along the gradient direction, every ``EVERY`` steps."""

    name = "landscape"

    def __init__(self, net: nn.Module, data=None, config=None):
        self.net, self.lr = net, config.lr
        self.records: dict[str, list] = {k: [] for k in ("step", "loss", "loss_min", "loss_max", "gdiff_min",
                                                         "gdiff_max", "beta")}  # fmt: skip

    def wants(self, step: Step) -> bool:
        return every(EVERY, step)

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        self.records["step"].append(step.number)
        for key, value in landscape_of(self.net, x, y, opt, [f * self.lr for f in FACTORS]).items():
            self.records[key].append(value)

    def results(self) -> dict:
        return {"factors": FACTORS, "every": EVERY, **{k: rounded(v) if k != "step" else v
                                                        for k, v in self.records.items()}}  # fmt: skip


def flat_grad(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double()


def landscape_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, etas: list[float]) -> dict[str, float]:
    """Loss and gradient along θ − η·g for each η; ``net`` holds this step's gradient g, and it, its
    buffers and ``opt`` are left exactly as they were."""
    g = flat_grad(net)
    grads = [p.grad.detach().clone() for p in net.parameters()]
    losses, diffs, betas = [], [], []
    with preserved(net, opt) as theta:
        loss0 = nn.functional.mse_loss(net(x), y).item()  # this step's loss (running statistics put back)
        for eta in etas:
            with torch.no_grad():
                for p, p0, gp in zip(net.parameters(), theta, grads, strict=True):
                    torch.add(p0, gp, alpha=-eta, out=p.data)
            net.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            diff = (g - flat_grad(net)).norm().item()
            losses.append(loss.item())
            diffs.append(diff)
            betas.append(diff / max(eta * g.norm().item(), 1e-300))
    return {"loss": loss0, "loss_min": min(losses), "loss_max": max(losses), "gdiff_min": min(diffs),
            "gdiff_max": max(diffs), "beta": max(betas)}  # fmt: skip


def config_problem(config) -> str | None:
    """Why train.py cannot run this config (a range with no learning rate), or None."""
    missing = [r for r in config.ranges if config.lr is None and r not in LR]
    if missing:
        return f"argument --lr: landscape has no learning rate of its own for R = {missing[0]:g} (only {sorted(LR)})"
    return None


def run(config, log=print) -> dict:
    """One experiment per range at its learning rate, merged: the runs carry their ``lr``."""
    merged: dict = {}
    progress.current().plan(len(config.ranges) * len(config.models) * len(config.seeds))  # in one round per range
    for r in config.ranges:
        lr = LR[r] if config.lr is None else config.lr
        part = run_experiment(dataclasses.replace(config, ranges=[r], lr=lr), log, probe=LandscapeProbe)
        for run_ in part["runs"]:
            run_["lr"] = lr
        if not merged:
            merged = {**part, "config": dataclasses.asdict(config)}
        else:
            merged["datasets"] += part["datasets"]
            merged["runs"] += part["runs"]
    return merged


def measure(run_: dict, key: str) -> list[float]:
    ls = run_["landscape"]
    if key == "loss_spread":
        return [hi - lo for lo, hi in zip(ls["loss_min"], ls["loss_max"], strict=True)]
    return ls[key]


def plot_landscape(results: dict, outfile: Path) -> None:
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(len(ranges), len(MEASURES), figsize=(5 * len(MEASURES), 3.8 * len(ranges)), squeeze=False)
    for row, r in zip(axes, ranges, strict=True):
        for ax, (key, title) in zip(row, MEASURES.items(), strict=True):
            for model in models_of(results):
                runs = runs_of(results, r, model)
                band(ax, runs[0]["landscape"]["step"], stacked(runs, lambda run_, key=key: measure(run_, key)), model)
            ax.set(yscale="log", xlabel="training step",
                   title=f"{title}\nx in {range_text(r)}, SGD lr {runs_of(results, r, model)[0]['lr']:g}")  # fmt: skip
        row[0].legend(fontsize=8)
    save(fig, outfile)


def summary(results: dict, r: float, model: str, key: str) -> float:
    """The median over training of a measure, mean over seeds."""
    runs = runs_of(results, r, model)
    return sum(float(torch.tensor(measure(run_, key)).median()) for run_ in runs) / len(runs)


MARGIN = 0.9  # "smoother" means at least 10% lower: a few percent is within the spread over seeds
VERDICT_MEASURES = {"gdiff_max": "gradient change", "beta": "β-smoothness"}


def median_of(run_: dict, key: str) -> float:
    """One run's median over training of a measure."""
    return float(torch.tensor(measure(run_, key)).median())


def smoother(results: dict, r: float) -> dict[str, tuple[stats.Interval, str]]:
    """Per measure of ``VERDICT_MEASURES``: the paired log-ratio MyBN / plain of the median over training,
    and the answer to "at least 10% lower with MyBN"."""
    out = {}
    for key in VERDICT_MEASURES:
        ci = ratio(results, r, "my_bn", "plain", lambda run_, key=key: median_of(run_, key))
        out[key] = ci, stats.decide(ci, math.log(MARGIN), "below")
    return out


def landscape_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"Plain SGD, {config['epochs']} epochs, probes every {EVERY} steps at η = "
        f"{', '.join(f'{f:g}' for f in FACTORS)} × the learning rate; the median over training, mean over "
        f"{len(config['seeds'])} seeds "
        f"({source(results)}).",
        "",
        "| inputs | SGD lr | net | final test MSE | " + " | ".join(MEASURES.values()) + " |",
        "|---|---|---|---|" + "---|" * len(MEASURES),
    ]
    for r in reversed(ranges_of(results)):
        for model in models_of(results):
            runs = runs_of(results, r, model)
            final = sum(run_["test_mse"][-1] for run_ in runs) / len(runs)
            cells = [f"{summary(results, r, model, key):.3g}" for key in MEASURES]
            lines.append(f"| {range_text(r)} | {runs[0]['lr']:g} | {label(model)} | {final:.4g} | " + " | ".join(cells)
                         + " |")  # fmt: skip
    return "\n".join(lines)


def landscape_verdict(results: dict) -> Verdict:
    measured, answers = [], []
    for r in (HARD, EASY):
        per = smoother(results, r)
        measured.append(f"{range_text(r)}: " + ", ".join(f"{VERDICT_MEASURES[k]} {ci.ratio_text()}"
                                                         for k, (ci, _) in per.items()))  # fmt: skip
        answers.append(f"{range_text(r)}: " + ", ".join(f"{VERDICT_MEASURES[k]} {bold(answer)}"
                                                        for k, (_, answer) in per.items()))  # fmt: skip
    rule = (f"per seed, log(MyBN / plain) of each measure's median over training; holds where the interval lies "
            f"below log {MARGIN:g} (at least 10% lower with MyBN), does not hold where it lies above, else not "
            f"decided; each measure and range on its own ({len(results['config']['seeds'])} seeds)")  # fmt: skip
    return Verdict("A smoother landscape (Santurkar et al. 2018, §3.2)",
                   "along the gradient, the loss and its gradient change less with BN (plain SGD, same learning rate)",
                   "MyBN / plain: " + "; ".join(measured), rule, "; ".join(answers),
                   "[landscape](docs/landscape.md)")  # fmt: skip


EXPERIMENT = Experiment(
    name="landscape",
    doc=__doc__,
    preset={"models": ["plain", "my_bn"], "epochs": 100, "optimizer": "sgd",
            "diagnostics": False, "lr": None},  # fmt: skip  # None: each range's rate from LR
    run=run,
    figures=lambda results: {"landscape.png": partial(plot_landscape, results)},
    tables=lambda results: {"landscape-table": landscape_table(results)},
    check=runs_with(("landscape", "lr"), "its probe's runs"),
    config_problem=config_problem,
    verdicts=lambda results: [landscape_verdict(results)],
)
