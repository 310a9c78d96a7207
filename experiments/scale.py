"""scale: does batch norm make the weights' scale irrelevant and the effective learning rate self-tuning?

A convolution followed by batch norm computes the same function whatever the scale of each of its
filters w, so (van Laarhoven 2017, "L2 Regularization versus Batch and Weight Normalization"; Hoffer,
Banner, Golan & Soudry 2018, "Norm matters"; Arora, Li & Lyu 2019, "Theoretical Analysis of Auto
Rate-Tuning by Batch Normalization"): the gradient is orthogonal to w and scales as 1/‖w‖; a step of
plain SGD without weight decay makes ‖w‖² grow by exactly η²‖g‖² (‖w − ηg‖² = ‖w‖² + η²‖g‖² when
⟨w, g⟩ = 0); the step's effect on the function is set by the *effective* learning rate η / ‖w‖²; and
weight decay, which shrinks ‖w‖, keeps it up. Li & Arora 2019 ("An Exponential Learning Rate Schedule
for Deep Learning", Theorem 1.1, for plain SGD): on a loss invariant to the scale of every trained
weight, weight decay λ at a constant rate η is the same training as no weight decay at the rate
η_t = η (1 − ηλ)^(−2t−1) at step t (from 0): w̃_t = w_t / (1 − ηλ)^t at every step, the same function.

The conv net of the conv experiment with ``MyBN2d`` (the same digits, batches of 32, 5 seeds as one
grouped net, plain SGD at a constant rate, ``EPOCHS`` epochs) in the runs of ``RUNS``: at rate ``LR``
without and with weight decay ``WD``, and at ten times the rate without; and for Li & Arora's theorem
the net whose every trained weight is scale invariant (batch norm without γ and β, the classifier
frozen at its initial weights), with weight decay at rate ``LR`` and without it on their exponential
schedule, that pair also for each of ``long_epochs`` (in the results' ``longer``: a run's curves are as
long as its training). Each step, per seed and convolution: ‖W‖² before and after and η²‖∇W‖² (a probe); after each
epoch, the test accuracy; for the theorem's pair, the largest difference of their logits on the test
digits (training mode: the test set's own statistics) and of their test accuracies.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import ClassVar

import torch

from experiments.record import Experiment, checked_runs
from lab import stats
from lab.data import digits_standardised
from lab.loop import fit_members, member_accuracy, member_correct
from lab.nets import ConvNet
from lab.pages import table
from lab.plotting import COLOURS, save, seeds_text, subplots
from lab.probe import Probe, Step
from lab.results import (
    LONGER,
    at_budget,
    budget_runs,
    budgets,
    longer_lists,
    pack_items,
    rounded,
    source,
    unpack_items,
)
from lab.settings import DTYPES, Settings, batch_int, flag, positive_float, positive_int, unit_float
from lab.verdicts import Part, Verdict, minus, paired, per_budget
from lab.workers import environment, run_pool

WD = 0.01  # the weight decay λ of the runs with it


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    factor: float = 1.0  # the learning rate: the preset's times this
    weight_decay: float = 0.0
    invariant: bool = False  # batch norm without γ and β, the classifier frozen: every trained weight scale invariant
    exponential: bool = False  # Li & Arora's schedule, η (1 − ηλ)^(−2t−1), in place of weight decay λ


RUNS = {
    "no_wd": Setting("no weight decay"),
    "wd": Setting(f"weight decay {WD:g}", weight_decay=WD),
    "lr10": Setting("10 × the rate, no weight decay", factor=10.0),
    "invariant_wd": Setting(f"scale invariant, weight decay {WD:g}", weight_decay=WD, invariant=True),
    "invariant_exp": Setting("scale invariant, exponential rate", invariant=True, exponential=True),
}
PAIR = ("invariant_wd", "invariant_exp")  # Li & Arora's theorem: the same training


@dataclasses.dataclass
class ScaleSettings(Settings):
    """The scale experiment's settings: the conv net with MyBN2d under plain SGD, its preset as the defaults."""

    epochs: int = flag(8, "training epochs", type=positive_int)
    long_epochs: list[int] = flag([24], "longer budgets, in epochs: Li & Arora's pair, the runs the verdict reads, "
                                  "trains at each too; none: --long-epochs alone", type=positive_int, nargs="*",
                                  metavar="E")
    lr: float = flag(0.1, "learning rate η (plain SGD, constant; the lr10 run trains at 10 η)", type=positive_float)
    batch_size: int = flag(32, "mini-batch size", type=batch_int)
    bn_momentum: float = flag(0.1, "momentum of the batch-norm layers' running estimates", type=unit_float)
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {"device": ("cpu", "it runs on the CPU"),
                                                     "nproc": (1, "each setting trains in one process")}


class NormProbe(Probe):
    """Every step, per member and convolution: ‖W‖² before the step and after it, and what the theory
    says the step adds to it, (1 − ηλ)²‖W‖² + η²‖∇W‖² − ‖W‖² (η²‖∇W‖² without weight decay), summed
    over the run; the largest |cos(W, ∇W)| seen; ‖W‖² after every epoch."""

    name = "norms"

    def __init__(self, net: ConvNet):
        self.convs, self.k = list(net.convs), net.k
        zeros = lambda: torch.zeros(self.k, len(self.convs), dtype=torch.float64)  # noqa: E731
        self.growth, self.predicted, self.cos = zeros(), zeros(), 0.0
        self.current = self.norms()  # ‖W‖² now: before the next step, after the last
        self.w_sq = [self.current]

    def norms(self) -> torch.Tensor:
        """(K, convolutions): each member's ‖W‖² of each convolution."""
        return torch.stack([c.weight.detach().double().view(self.k, -1).pow(2).sum(1) for c in self.convs], 1)

    def wants(self, step: Step) -> bool:
        return True

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        group = opt.param_groups[0]
        lr, decay = group["lr"], group["weight_decay"]
        grads = [c.weight.grad.double().view(self.k, -1) for c in self.convs]
        g_sq = torch.stack([g.pow(2).sum(1) for g in grads], 1)
        self.predicted += ((1 - lr * decay) ** 2 - 1) * self.current + lr**2 * g_sq
        for conv, g in zip(self.convs, grads, strict=True):
            w = conv.weight.detach().double().view(self.k, -1)
            self.cos = max(self.cos, ((w * g).sum(1).abs() / (w.norm(dim=1) * g.norm(dim=1)).clamp_min(1e-300)).max()
                           .item())

    def stepped(self, step: Step) -> None:
        after = self.norms()
        self.growth += after - self.current
        self.current = after

    def epoch(self, epoch: int) -> None:
        self.w_sq.append(self.current)


def train(config, name: str, epochs: int) -> tuple[ConvNet, NormProbe, list[torch.Tensor], torch.Tensor]:
    """One setting of ``RUNS`` for every seed, ``epochs`` epochs, as one grouped ``ConvNet`` with MyBN2d:
    the net, its probe, the test accuracy of each member at the start and after every epoch, and which
    test digits each gets right at the end."""
    setting = RUNS[name]
    x_train, y_train, x_test, y_test = digits_standardised(DTYPES[config.dtype])
    net = ConvNet("my_bn", list(config.seeds), bn_momentum=config.bn_momentum, affine=not setting.invariant,
                  mybn_backend=config.mybn_backend, dtype=DTYPES[config.dtype])
    if setting.invariant:
        net.head.requires_grad_(False)
    lr = config.lr * setting.factor
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=setting.weight_decay)
    schedule = (lambda t: lr * (1 - lr * WD) ** (-2 * t - 1)) if setting.exponential else None  # Li & Arora's
    probe, accs = NormProbe(net), [member_accuracy(net, x_test, y_test)]
    fit_members(net, opt, x_train, y_train, config.batch_size, epochs, schedule, [probe],
                after_epoch=lambda _: accs.append(member_accuracy(net, x_test, y_test)))
    return net, probe, accs, member_correct(net, x_test, y_test)


def train_job(config, job: tuple[tuple[str, ...], int]) -> list[dict]:
    """The settings ``names`` of ``job`` = (names, epochs) one after the other (the theorem's pair together,
    to compare their nets), one record per setting and seed."""
    names, epochs = job
    trained = {name: train(config, name, epochs) for name in names}
    out = []
    for name, (_, probe, accs, right) in trained.items():
        for j, seed in enumerate(config.seeds):
            out.append({"model": name, "seed": seed, "epochs": epochs, "lr": config.lr * RUNS[name].factor,
                        "weight_decay": RUNS[name].weight_decay, "test_acc": rounded([a[j].item() for a in accs]),
                        "test_items": pack_items(right[:, j].tolist()),
                        "w_sq": rounded([w[j].tolist() for w in probe.w_sq]),
                        "growth": rounded(probe.growth[j].tolist()), "predicted": rounded(probe.predicted[j].tolist()),
                        "cos_max": rounded(probe.cos), "logit_gap": math.nan})
    if names == PAIR:  # the largest difference of the two nets' logits on the test digits, training mode (null
        # in the other runs' records)
        x_test = digits_standardised(DTYPES[config.dtype])[2]
        x = x_test.unsqueeze(1).expand(-1, len(config.seeds), -1, -1, -1)
        with torch.no_grad():
            gap = (trained[PAIR[0]][0].train()(x) - trained[PAIR[1]][0].train()(x)).abs().amax((0, 2))  # (K,)
        for record in out:
            record["logit_gap"] = rounded(gap[config.seeds.index(record["seed"])].item())
    return out


def run(config, log=print) -> dict:
    digits_standardised(DTYPES[config.dtype])  # loaded once here, before the workers fork
    jobs = [*((PAIR, e) for e in sorted(set(config.long_epochs) - {config.epochs}, reverse=True)),
            (PAIR, config.epochs), *(((name,), config.epochs) for name in RUNS if name not in PAIR)]  # longest first
    runs = []
    with run_pool(config, len(jobs)) as pool_map:
        for (names, epochs), records in zip(jobs, pool_map(functools.partial(train_job, config), jobs), strict=True):
            runs += records
            for name in names:
                final = [r["test_acc"][-1] for r in records if r["model"] == name]
                log(f"scale: {name:<14} {epochs:>2} epochs: test accuracy {sum(final) / len(final):.3f} (mean of "
                    f"{len(final)} seeds)")
    order = sorted(runs, key=lambda r: (r["epochs"], list(RUNS).index(r["model"]), r["seed"]))
    return {"config": dataclasses.asdict(config), "environment": environment(config), "weight_decay": WD,
            "datasets": [], "runs": [r for r in order if r["epochs"] == config.epochs],
            LONGER: {str(e): [r for r in order if r["epochs"] == e] for e in sorted({r["epochs"] for r in order}
                                                                                    - {config.epochs})}}


def check_format(results: dict) -> None:
    """Its runs (``runs``: the settings' budget; ``LONGER``: Li & Arora's pair at the longer ones), each
    with what the figure, table and verdict read."""
    listed = [("runs", checked_runs(results, tuple(RUNS)))]
    listed += [(name, checked_runs({"runs": runs}, PAIR)) for name, runs in longer_lists(results).items()]
    for where, runs in listed:
        for i, run_ in enumerate(runs):
            check_run(run_, f"{where}[{i}]")


def check_run(run_: dict, where: str) -> None:
    if not isinstance(run_.get("epochs"), int):
        raise ValueError(f"{where}: needs 'epochs', its training budget: rerun `python train.py scale`")
    if not run_.get("test_acc") or len(run_.get("w_sq", [])) != len(run_["test_acc"]):
        raise ValueError(f"{where}: 'test_acc' and 'w_sq' must be lists of one length, one entry an epoch")
    if len(run_.get("growth", [])) != len(run_.get("predicted", [0])):
        raise ValueError(f"{where}: 'growth' and 'predicted' must hold one number per convolution")
    if not isinstance(run_.get("test_items"), str):
        raise ValueError(f"{where}: needs 'test_items', which test digits it got right at the end: rerun "
                         "`python train.py scale`")


# ---------------------------------------------------------------------------------------------- reading


def per_seed(results: dict, name: str, value) -> dict[int, float]:
    return {r["seed"]: value(r) for r in budget_runs(results, name)}


def effective(r: dict) -> float:
    """The mean over convolutions of log(η / ‖W‖²) at the end: the log of the effective learning rate."""
    return sum(math.log(r["lr"] / w) for w in r["w_sq"][-1]) / len(r["w_sq"][-1])


def growth_ratio(results: dict, name: str = "no_wd") -> stats.Interval:
    """log(the growth of Σ‖W‖² over the run / what the theory predicts), seed by seed."""
    return stats.t_interval(list(per_seed(results, name, lambda r: math.log(sum(r["growth"]) /
                                                                            sum(r["predicted"]))).values()))


def effective_ratio(results: dict, name: str, baseline: str = "no_wd") -> stats.Interval:
    """log(``name``'s effective learning rate at the end / ``baseline``'s), seed by seed."""
    return stats.paired_difference(*paired(per_seed(results, name, effective), per_seed(results, baseline, effective)))


def pair_gap(results: dict) -> stats.Interval:
    """The test accuracy at the end, the exponential schedule minus weight decay, seed by seed and digit by
    digit (its interval counts the test digits' sampling error too: ``stats.accuracy_interval``)."""
    a, b = (per_seed(results, name, lambda r: unpack_items(r["test_items"])) for name in reversed(PAIR))
    return stats.accuracy_interval(list(minus(a, b).values()), (-1.0, 1.0))


# ---------------------------------------------------------------------------------------------- figure, table

STYLES = {"no_wd": ("my_bn", "-"), "wd": ("torch_bn", "-"), "lr10": ("plain", "-"), "invariant_wd": ("torch_bn", "--"),
          "invariant_exp": ("renorm", ":")}


def plot_scale(results: dict, outfile: Path) -> None:
    """(a) Σ‖W‖² over the epochs; (b) the effective learning rate η/‖W‖²; (c) each seed's and
    convolution's growth of ‖W‖² over the run against the theory's; (d) test accuracy over the epochs."""
    fig, axes = subplots(2, 2, figsize=(13, 9))
    (a, b), (c, d) = axes
    n = len(results["config"]["seeds"])
    for name, setting in RUNS.items():
        runs = budget_runs(results, name)
        colour, ls = COLOURS[STYLES[name][0]][0], STYLES[name][1]
        w_sq = torch.tensor([r["w_sq"] for r in runs], dtype=torch.float64)  # (seeds, epochs + 1, convolutions)
        epochs = range(w_sq.shape[1])
        a.plot(epochs, w_sq.sum(2).mean(0), ls, color=colour, lw=2, label=setting.label)
        if not setting.exponential:
            eff = (torch.tensor([r["lr"] for r in runs], dtype=torch.float64)[:, None, None] / w_sq).log().mean(2)
            b.plot(epochs, eff.mean(0).exp(), ls, color=colour, lw=2, label=setting.label)
        c.scatter([p for r in runs for p in r["predicted"]], [g for r in runs for g in r["growth"]], color=colour,
                  s=14, label=setting.label)
        d.plot(epochs, torch.tensor([r["test_acc"] for r in runs]).mean(0), ls, color=colour, lw=2,
               label=setting.label)
    low, high = c.get_xlim()
    c.plot([low, high], [low, high], color="0.5", lw=1, label="growth = theory")
    a.set(xlabel="epoch", ylabel="Σ ‖W‖² over the convolutions", yscale="log",
          title=f"(a) The weights' squared norm, mean over {seeds_text(n)}")
    b.set(xlabel="epoch", ylabel="η / ‖W‖², geometric mean over convolutions", yscale="log",
          title="(b) The effective learning rate")
    c.set(xlabel="theory: Σ_t (1 − ηλ)²‖W‖² + η²‖∇W‖² − ‖W‖²", ylabel="measured growth of ‖W‖² over the run",
          title="(c) Each seed's and convolution's ‖W‖² growth")
    d.set(xlabel="epoch", ylabel="test accuracy", title=f"(d) Test accuracy, mean over {seeds_text(n)}")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    save(fig, outfile)


def scale_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"The conv net with MyBN2d, {config['epochs']} epochs of batches of {config['batch_size']}, plain SGD at "
        f"{config['lr']:g} (ten times that in *lr10*), {len(config['seeds'])} seeds ({source(results)}). *Growth / "
        "theory*: the growth of Σ‖W‖² over the run over the sum of each step's (1 − ηλ)²‖W‖² + η²‖∇W‖² − ‖W‖², "
        "geometric mean over seeds and its interval. *Test accuracy*: mean over seeds, its 95% interval counting "
        "the seeds' and the test digits' sampling error. *Effective rate*: η / ‖W‖² at the end, geometric mean over "
        "convolutions and seeds. *|cos(W, ∇W)|*: the largest over every step, convolution and seed (0 for an "
        "exactly scale-invariant layer).",
        "",
    ]
    rows = []
    for name, setting in RUNS.items():
        runs = budget_runs(results, name)
        acc = stats.accuracy_interval([unpack_items(r["test_items"]) for r in runs])
        start, end = (sum(sum(r["w_sq"][i]) for r in runs) / len(runs) for i in (0, -1))
        eff = "" if setting.exponential else f"{math.exp(sum(effective(r) for r in runs) / len(runs)):.3g}"
        rows.append([setting.label, acc.text(".3f"), f"{start:.3g} → {end:.3g}",
                     growth_ratio(results, name).ratio_text(".4f"), eff, f"{max(r['cos_max'] for r in runs):.1e}"])
    lines.append(table(("run", "test accuracy", "Σ‖W‖², start → end", "growth / theory", "effective rate, end",
                        "largest \\|cos(W, ∇W)\\|"), rows))
    for epochs in budgets(results):
        view = at_budget(results, epochs)
        gaps = [r["logit_gap"] for r in budget_runs(view, PAIR[0])]
        lines += ["", f"Li & Arora's pair, {epochs} epochs, seed by seed: test accuracy, exponential rate − weight "
                  f"decay {pair_gap(view).text('+.4f')}; the largest difference of their logits on the test digits "
                  f"(training mode), over the seeds: {max(gaps):.2g}."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- verdict

SAME_TRAINING = stats.Rule(0.01, "within")  # test accuracy, Li & Arora's schedule − weight decay
RULES = {"Li & Arora": SAME_TRAINING}


def scale_verdict(results: dict) -> Verdict:
    """Li & Arora's equivalence, an equivalence test with its margin. The growth of ‖W‖² and the
    effective rate beside it follow from ⟨W, ∇W⟩ = 0 (tests/experiments/test_scale.py holds them to it):
    they are shown, not decided, since they could not fail."""
    grows, kept, tuned = growth_ratio(results), effective_ratio(results, "wd"), effective_ratio(results, "lr10")

    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        if not all(budget_runs(view, name) for name in PAIR):
            return "", []
        same = pair_gap(view)
        return same.text("+.4f"), [Part(f"Li & Arora's equivalence ({budget})", "test accuracy, Li & Arora's schedule "
                                        "− weight decay", same, SAME_TRAINING, budget)]

    pairs, parts = per_budget(results, read)
    measured = (f"test accuracy, Li & Arora's schedule − weight decay: {pairs}; beside it, the identities (tests, not "
                f"verdicts; {results['config']['epochs']} epochs): growth / theory of ‖W‖² without weight decay "
                f"{grows.ratio_text('.4f')}; effective rate, with / without weight decay {kept.ratio_text()}, at "
                f"10 × η / at η {tuned.ratio_text()}")
    rule = ("per seed, the test-accuracy difference of Li & Arora's pair; two one-sided tests: holds where its "
            "interval lies inside ±0.01, does not hold where it lies beyond an end, else not decided; at each budget")
    return Verdict("Batch norm makes the weights' scale irrelevant (van Laarhoven 2017; Li & Arora 2019)",
                   "Li & Arora's exponential learning-rate schedule, without weight decay, trains as weight decay "
                   "does (the weights' scale being irrelevant)",
                   measured, rule, parts, "[scale](docs/scale.md)")


EXPERIMENT = Experiment(
    name="scale",
    doc=__doc__,
    settings=ScaleSettings,
    run=run,
    figures=lambda results: {"scale.png": functools.partial(plot_scale, results)},
    tables=lambda results: {"scale-table": scale_table(results)},
    results_format=check_format,
    summary=scale_table,
    verdicts=lambda results: [scale_verdict(results)],
)
