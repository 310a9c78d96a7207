"""ics: internal covariate shift, measured two ways through training, in the plain and the MyBN net.

- Santurkar, Tsipras, Ilyas & Madry (2018), Definition 2.1: G is the gradient of block i's Linear
  weight at step t; G' the same gradient, on the same batch, after the blocks below i (only they)
  have taken their step-t update. ICS is ‖G − G'‖ (and cos(G, G')): how much the updates below
  change what block i is asked to do.
- Ioffe & Szegedy's (2015) reading: how far the distribution of block i's input moves when the
  blocks below take their step: per unit, the change of the batch mean and of the batch std.

Block 1 has nothing below it (its input is x), so both are zero there by definition; the figures
and tables show blocks 2 to 4. Measured every ``EVERY`` steps, on the training batch of that step.

The MyBN net with Santurkar et al.'s non-stationary noise (``my_bn_noisy``, the noisy experiment's)
is measured too: whether the noise raises the shift it is meant to cause is the noisy experiment's
manipulation check. Its noise is drawn afresh in each forward of the probe, as in each training
step: what the next block sees moves with the noise as well as with the update below (the probe
puts the noise's generator back afterwards, so training draws what it would have drawn).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from experiments.record import Experiment, runs_with
from lab import stats
from lab.loop import steps_per_epoch as training_steps
from lab.pages import table
from lab.plotting import band, label, range_text, save, stacked, subplots
from lab.probe import Probe, Step, every, preserved
from lab.regression import Regression, models_of, ranges_of, run_with_longer, runs_of
from lab.results import at_budget, budgets, longer_lists, rounded, source
from lab.settings import TEN_SEEDS, flag, positive_int
from lab.verdicts import EASY, HARD, Part, Verdict, ratio

EVERY = 2  # steps between measurements
MEASURES = {  # key -> what the figures and tables call it
    "rel": "‖G − G′‖ / ‖G‖",
    "cos": "cos(G, G′)",
    "dmean": "Δ mean of block input",
    "dstd": "Δ std of block input",
}


class ICSProbe(Probe):
    """Both readings of ICS for blocks 2..depth, every ``EVERY`` steps (see the module docstring)."""

    name = "ics"

    def __init__(self, net, data=None, config=None):
        self.net = net
        self.records: dict[str, list] = {"step": [], "l2": [], "grad_norm": [], "cos": [], "dmean": [], "dstd": []}

    def wants(self, step: Step) -> bool:
        return every(EVERY, step)

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        measures = ics_of(self.net, x, y, opt)
        self.records["step"].append(step.number)
        for key, values in measures.items():
            self.records[key].append(values)

    def results(self) -> dict:
        return {"every": EVERY, "blocks": list(range(2, len(self.net.blocks) + 1)),
                **{k: rounded(v) if k != "step" else v for k, v in self.records.items()}}


def block_inputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What enters each block but the first, in a forward of ``x`` in the net's current mode."""
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach())) for b in net.blocks[1:]]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def ics_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
           loss_fn=nn.functional.mse_loss) -> dict[str, list[float]]:
    """Per block 2..depth: ‖G − G'‖, ‖G‖, cos(G, G'), and the mean over units of |Δ mean| and |Δ std|
    of the block's input. ``net`` holds this step's gradients (of ``loss_fn`` on x, y); it, its buffers
    and ``opt`` are left exactly as they were."""
    blocks = net.blocks
    grads = [b.linear.weight.grad.detach().clone() for b in blocks[1:]]
    out: dict[str, list[float]] = {"l2": [], "grad_norm": [], "cos": [], "dmean": [], "dstd": []}
    with preserved(net, opt) as theta:
        before = block_inputs(net, x)
        opt.step()  # this step's update of every parameter, the one training is about to take
        theta_plus = [p.detach().clone() for p in net.parameters()]
        below = [set(map(id, b.parameters())) for b in blocks]  # ids of each block's parameters
        for i in range(1, len(blocks)):
            lower = set().union(*below[:i])
            with torch.no_grad():
                for p, old, new in zip(net.parameters(), theta, theta_plus, strict=True):
                    p.copy_(new if id(p) in lower else old)
            net.zero_grad(set_to_none=True)
            seen: list[torch.Tensor] = []
            handle = blocks[i].register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].detach()))
            loss_fn(net(x), y).backward()
            handle.remove()
            g, g_new = grads[i - 1].double(), blocks[i].linear.weight.grad.double()
            out["l2"].append((g - g_new).norm().item())
            out["grad_norm"].append(g.norm().item())
            out["cos"].append((g.flatten() @ g_new.flatten() / (g.norm() * g_new.norm()).clamp_min(1e-300)).item())
            a, b = before[i - 1].double(), seen[0].double()
            out["dmean"].append((b.mean(0) - a.mean(0)).abs().mean().item())
            out["dstd"].append((b.std(0) - a.std(0)).abs().mean().item())
    return out


def measure(run_: dict, key: str) -> torch.Tensor:
    """One run's measure along training, (measurements, blocks); ``rel`` is ‖G − G'‖ / ‖G‖."""
    ics = run_["ics"]
    if key == "rel":
        return torch.tensor(ics["l2"], dtype=torch.float64) / torch.tensor(ics["grad_norm"]).clamp_min(1e-300)
    return torch.tensor(ics[key], dtype=torch.float64)


def plot_ics(results: dict, outfile: Path) -> None:
    """Each measure of the last block along training, per net: mean and min–max band over seeds."""
    ranges = ranges_of(results)
    fig, axes = subplots(len(ranges), len(MEASURES), figsize=(4.4 * len(MEASURES), 3.6 * len(ranges)), squeeze=False)
    for row, r in zip(axes, reversed(ranges), strict=True):
        for ax, (key, title) in zip(row, MEASURES.items(), strict=True):
            for model in models_of(results):
                runs = runs_of(results, r, model)
                values = stacked(runs, lambda run_, key=key: measure(run_, key)[:, -1].tolist())
                band(ax, runs[0]["ics"]["step"], values, model)
            ax.set(xlabel="training step", title=f"{title}, block 4, x in {range_text(r)}")
            if key != "cos":
                ax.set_yscale("log")
        row[0].legend(fontsize=8)
    save(fig, outfile)


def summary(results: dict, r: float, model: str, key: str) -> list[float]:
    """Per block 2..depth: the median over training of the measure, mean over seeds."""
    runs = runs_of(results, r, model)
    medians = torch.stack([measure(run_, key).median(0).values for run_ in runs])  # (seeds, blocks)
    return medians.mean(0).tolist()


READINGS = {"santurkar": "‖G − G′‖/‖G‖", "ioffe": "input shift"}  # the two readings of ICS the verdict compares
LOWER = stats.Rule(0.0, "below")  # log(MyBN / plain) of a reading below 0: less ICS with batch norm
RULES = {"less ICS with MyBN": LOWER}


def steps_per_epoch(results: dict) -> int:
    """The optimiser steps of one epoch of these runs."""
    return training_steps(results["config"]["batch_size"])


def reading(run_: dict, name: str, last_step: int | None = None) -> float:
    """One run's ICS by reading ``name`` over the steps up to ``last_step`` (None: the whole run): per
    block, the median over the window (Santurkar's ‖G − G′‖/‖G‖, or Ioffe's Δ mean + Δ std of the
    block's input), then the mean over blocks 2..depth."""
    values = measure(run_, "rel") if name == "santurkar" else measure(run_, "dmean") + measure(run_, "dstd")
    if last_step is not None:
        values = values[torch.tensor(run_["ics"]["step"]) <= last_step]
    return float(values.median(0).values.mean())


def readings(results: dict, r: float, last_step: int | None = None, model: str = "my_bn",
             baseline: str = "plain") -> dict[str, stats.Interval]:
    """Per reading: the paired log-ratio ``model`` / ``baseline`` over the seeds, in the window up to
    ``last_step``."""
    return {name: ratio(results, r, model, baseline, functools.partial(reading, name=name, last_step=last_step))
            for name in READINGS}


def ics_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"Median over training (every {EVERY} steps, {config['epochs']} epochs) of each measure, mean over "
        f"{len(config['seeds'])} seeds ({source(results)}); each cell gives blocks 2 / 3 / 4. Δ mean and "
        "Δ std: the change of each unit's batch mean and std of the block's input in one step, in absolute value, "
        "mean over units.",
        "",
    ]
    rows = [[range_text(r), label(model), *(" / ".join(f"{v:.3g}" for v in summary(results, r, model, key))
                                            for key in MEASURES)]
            for r in reversed(ranges_of(results)) for model in models_of(results)]
    return "\n".join([*lines, table(("inputs", "net", *MEASURES.values()), rows)])


def ics_verdict(results: dict) -> Verdict:
    """Per range and window (the first epoch, where batch norm makes its difference, and the whole run):
    does MyBN have less ICS than the plain net, by both readings? The whole run also at each longer budget
    (its first epoch is the preset's: the same batches and steps)."""
    windows = {"first epoch": steps_per_epoch(results), "whole run": None}
    budget = f"{results['config']['epochs']} epochs"
    measured, parts = [], []
    for r in (HARD, EASY):
        for window, last in windows.items():
            cis = readings(results, r, last)
            measured.append(f"{range_text(r)}, {window}: " + ", ".join(f"{READINGS[k]} {ci.ratio_text()}"
                                                                       for k, ci in cis.items()))
            parts += [Part(f"{range_text(r)}, {window}: {READINGS[k]}", f"log(MyBN / plain) of {READINGS[k]}, "
                           f"{range_text(r)}, {window}", ci, LOWER, budget, scale="log-ratio")
                      for k, ci in cis.items()]
    for epochs in budgets(results)[1:]:
        view = at_budget(results, epochs)
        for r in (HARD, EASY):
            if not all(runs_of(view, r, m) for m in ("plain", "my_bn")):
                continue
            cis = readings(view, r)
            where = f"{range_text(r)}, whole run of {epochs} epochs"
            measured.append(f"{where}: " + ", ".join(f"{READINGS[k]} {ci.ratio_text()}" for k, ci in cis.items()))
            parts += [Part(f"{where}: {READINGS[k]}", f"log(MyBN / plain) of {READINGS[k]}, {where}", ci, LOWER,
                           f"{epochs} epochs", scale="log-ratio") for k, ci in cis.items()]
    rule = ("per seed, log(MyBN / plain) of each reading (its median over the window, mean over blocks 2–4); "
            "holds where the interval lies below 0 (MyBN lower), does not hold where it lies above 0, else not "
            "decided; each reading, range and window a part; the whole run also at the longer budget")
    return Verdict("Internal covariate shift (Ioffe & Szegedy 2015)",
                   "BN nets have less ICS (Santurkar's Def. 2.1, and the shift of each block's input), most where BN "
                   "helps most", "MyBN / plain: " + "; ".join(measured), rule, tuple(parts),
                   "[ics](docs/ics.md)")


_Ics = Regression.preset("_Ics", __name__, models=["plain", "my_bn", "my_bn_noisy"], diagnostics=False,
                         seeds=TEN_SEEDS)


@dataclass
class IcsSettings(_Ics):
    long_epochs: list[int] = flag([30], "longer budgets, in epochs: the plain net and MyBN on (-5, 5), whose whole "
                                  "run the verdict reads, and MyBN + noise (the noisy row's manipulation check), "
                                  "train at each too; none: --long-epochs alone",
                                  type=positive_int, nargs="*", metavar="E")


def run(config: IcsSettings, log=print) -> dict:
    """Every (range, net, seed) at the settings' epochs; and at each of ``long_epochs`` the plain net, MyBN
    and MyBN + noise on (-5, 5), in the results' ``longer`` (``regression.run_with_longer``)."""
    return run_with_longer(config, log, ICSProbe, HARD, ("plain", "my_bn", "my_bn_noisy"))


def check_runs(results: dict) -> None:
    """Every run (the longer budgets' too) measured by its probe."""
    for runs in (results["runs"], *longer_lists(results).values()):
        runs_with(("ics",), "runs measured by its probe")({"runs": runs})


EXPERIMENT = Experiment(
    name="ics",
    doc=__doc__,
    settings=IcsSettings,
    run=run,
    figures=lambda results: {"ics.png": partial(plot_ics, results)},
    tables=lambda results: {"ics-table": ics_table(results)},
    check=check_runs,
    verdicts=lambda results: [ics_verdict(results)],
)
