"""only_bn: can batch norm's γ and β alone train a conv net whose every other weight stays at its random
initialisation?

Frankle, Schwab & Morcos 2021 ("Training BatchNorm and Only BatchNorm: On the Expressive Power of
Random Features in CNNs"): "we investigate the performance achieved when training only these
parameters in BatchNorm and freezing all weights at their random initializations. Doing so leads to
surprisingly high performance [...], far higher than when training an equivalent number of randomly
chosen parameters elsewhere in the network. BatchNorm achieves this performance in part by naturally
learning to disable around a third of the random features."

The conv net of the conv experiment with ``MyBN2d`` (the same digits, batches of 32, SGD with momentum
0.9 on a cosine schedule, 5 seeds as one grouped net, the preset's epochs), trained four ways
(``SETS``): every parameter; γ and β alone (96 numbers: two per channel of three layers), the
classifier frozen too; γ and β and the classifier; and, the control, as many randomly chosen other
parameters as there are γ and β (drawn per seed from the convolutions' and the classifier's weights;
the convolutions' biases are left out, since batch norm cancels them). Measured per seed: the test
accuracy (eval mode), and the fraction of channels whose |γ| ends below ``OFF`` (γ starts at 1): the
features batch norm has learnt to turn off.
"""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from experiments.record import Experiment, checked_runs
from lab import stats
from lab.data import digits_standardised
from lab.loop import cosine, fit_members, member_correct, steps_per_epoch
from lab.nets import ConvNet
from lab.pages import table
from lab.plotting import COLOURS, interval_bars, save, subplots
from lab.results import at_budget, budget_runs, budgets, pack_items, rounded, source, unpack_items
from lab.settings import DTYPES, Settings, batch_int, flag, positive_float, positive_int, unit_float
from lab.verdicts import Part, Verdict, minus, per_budget
from lab.workers import environment, run_pool

SETS = {"all": "every parameter", "bn": "γ and β only", "bn_head": "γ, β and the classifier",
        "random": "as many random other weights"}
OFF = 0.1  # a channel whose |γ| ends below this is turned off
CHANCE = 0.1
TRAINS = 0.5  # as in the conv experiment: five times chance


@dataclass
class OnlyBnSettings(Settings):
    """The only_bn experiment's settings: the conv experiment's net and recipe, its preset as the defaults."""

    epochs: int = flag(8, "training epochs", type=positive_int)
    lr: float = flag(0.1, "learning rate (SGD with momentum on a cosine schedule)", type=positive_float)
    momentum: float = flag(0.9, "SGD momentum", type=unit_float)
    batch_size: int = flag(32, "mini-batch size", type=batch_int)
    bn_momentum: float = flag(0.1, "momentum of the batch-norm layers' running estimates", type=unit_float)
    width: int = flag(16, "channels of each of the three convolutions", type=positive_int)
    long_epochs: list[int] = flag([24], "longer budgets, in epochs, at which the two ways the verdict compares (γ "
                                  "and β only, as many random weights) train too; none: --long-epochs alone",
                                  type=positive_int, nargs="*", metavar="E")
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {"device": ("cpu", "it runs on the CPU"),
                                                     "nproc": (1, "each way trains in one process")}


def masks(net: ConvNet, seeds: list[int]) -> dict[str, torch.Tensor]:
    """For the control: per parameter of the convolutions' and the classifier's weights, 1 where a member
    trains that number: for each member (drawn from its seed) as many as it has γ and β, uniformly among
    its own such weights."""
    weights = {f"convs.{i}.weight": c.weight for i, c in enumerate(net.convs)} | {"head.weight": net.head.weight}
    k, count = net.k, sum(n.weight.numel() + n.bias.numel() for n in net.norms) // net.k
    out = {name: torch.zeros_like(w) for name, w in weights.items()}
    for member, seed in enumerate(seeds):
        sizes = [w.numel() // k for w in weights.values()]  # this member's share of each (its rows)
        chosen = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(20_000 + seed))[:count]
        flat = torch.zeros(sum(sizes))
        flat[chosen] = 1.0
        for (name, w), part in zip(weights.items(), flat.split(sizes), strict=True):
            rows = len(w) // k
            out[name][member * rows:(member + 1) * rows] = part.view_as(w[member * rows:(member + 1) * rows])
    return out


def build(config, which: str) -> tuple[ConvNet, list[torch.nn.Parameter]]:
    """The grouped net of one way of ``SETS`` and the parameters it trains; the others are frozen (and in
    the control, every number of a trained tensor but the chosen ones gets no gradient)."""
    seeds = list(config.seeds)
    net = ConvNet("my_bn", seeds, width=config.width, bn_momentum=config.bn_momentum, mybn_backend=config.mybn_backend,
                  dtype=DTYPES[config.dtype])
    named = dict(net.named_parameters())
    if which == "random":
        for name, mask in masks(net, seeds).items():
            named[name].register_hook(lambda g, m=mask: g * m)  # the other numbers get no gradient: they stay
    trained = {"all": lambda n: True, "bn": lambda n: n.startswith("norms."),
               "bn_head": lambda n: n.startswith(("norms.", "head.")),
               "random": lambda n: n.endswith("weight") and not n.startswith("norms.")}[which]
    for name, p in named.items():
        p.requires_grad_(trained(name))
    return net, [p for p in named.values() if p.requires_grad]


DECIDING = ("bn", "random")  # the ways the verdict compares, trained at the longer budgets too


def jobs(config) -> list[tuple[str, int]]:
    """Every (way, epochs) trained: each way at ``epochs``, the deciding ones at each of ``long_epochs``;
    the longest first."""
    todo = [(which, config.epochs) for which in SETS] + [(w, e) for e in config.long_epochs for w in DECIDING]
    return sorted(dict.fromkeys(todo), key=lambda job: -job[1])


def train_set(config, job: tuple[str, int]) -> list[dict]:
    """One way of ``SETS`` for ``epochs`` for every seed, as one grouped ``ConvNet``; one record a seed."""
    which, epochs = job
    x_train, y_train, x_test, y_test = digits_standardised(DTYPES[config.dtype])
    seeds = list(config.seeds)
    net, params = build(config, which)
    steps = epochs * steps_per_epoch(config.batch_size, len(x_train))
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    fit_members(net, opt, x_train, y_train, config.batch_size, epochs, cosine(config.lr, steps))
    right = member_correct(net, x_test, y_test)  # (N, K)
    acc = right.double().mean(0)
    gamma = torch.cat([n.weight.detach().view(net.k, -1) for n in net.norms], 1).abs()  # (K, channels)
    return [{"model": which, "epochs": epochs, "seed": s, "test_acc": rounded(acc[j].item()),
             "test_items": pack_items(right[:, j].tolist()), "off": rounded((gamma[j] < OFF).double().mean().item())}
            for j, s in enumerate(seeds)]


def run(config, log=print) -> dict:
    digits_standardised(DTYPES[config.dtype])  # loaded once here, before the workers fork
    runs = []
    todo = jobs(config)
    with run_pool(config, len(todo)) as pool_map:
        for (which, epochs), records in zip(todo, pool_map(functools.partial(train_set, config), todo), strict=True):
            runs += records
            log(f"only_bn: {SETS[which]:<30} {epochs:>2} epochs  test accuracy "
                f"{sum(r['test_acc'] for r in records) / len(records):.3f} (mean of {len(records)} seeds)")
    runs.sort(key=lambda r: (list(SETS).index(r["model"]), r["epochs"], r["seed"]))
    return {"config": dataclasses.asdict(config), "environment": environment(config), "datasets": [], "runs": runs}


def check_format(results: dict) -> None:
    for i, run_ in enumerate(checked_runs(results, tuple(SETS))):
        if not all(isinstance(run_.get(k), (int, float)) for k in ("test_acc", "off")):
            raise ValueError(f"runs[{i}]: needs numbers 'test_acc' and 'off'")
        if not isinstance(run_.get("epochs"), int):
            raise ValueError(f"runs[{i}]: needs an integer 'epochs'")
        if not isinstance(run_.get("test_items"), str):
            raise ValueError(f"runs[{i}]: needs 'test_items', which test digits it got right: rerun "
                             "`python train.py only_bn`")


def per_seed(results: dict, which: str, key: str = "test_acc") -> dict[int, float]:
    return {r["seed"]: r[key] for r in budget_runs(results, which)}


def items(results: dict, which: str) -> dict[int, list[int]]:
    """Per seed, each test digit: 1 right, 0 wrong."""
    return {r["seed"]: unpack_items(r["test_items"]) for r in budget_runs(results, which)}


def interval(results: dict, which: str, key: str = "test_acc") -> stats.Interval:
    """The test accuracy (its interval counting the seeds' and the test digits' sampling error,
    ``stats.accuracy_interval``), or the fraction of channels turned off (a t-interval over seeds)."""
    if key == "test_acc":
        return stats.accuracy_interval(list(items(results, which).values()))
    return stats.t_interval(list(per_seed(results, which, key).values()), bounds=(0.0, 1.0))


def over_random(results: dict) -> stats.Interval:
    """γ and β only minus as many random other weights: test accuracy, seed by seed and digit by digit."""
    return stats.accuracy_interval(list(minus(items(results, "bn"), items(results, "random")).values()), (-1.0, 1.0))


def plot_only_bn(results: dict, outfile: Path) -> None:
    """The test accuracy of each way of training (95% intervals), and the fraction of channels turned off."""
    fig, (a, b) = subplots(1, 2, figsize=(12, 4.6))
    n, colours = len(results["config"]["seeds"]), ("my_bn", "torch_bn", "renorm", "plain")
    for i, (which, text) in enumerate(SETS.items()):
        colour, _ = COLOURS[colours[i]]
        interval_bars(a, [i], [interval(results, which)], colour, "", text)
        interval_bars(b, [i], [interval(results, which, "off")], colour, "", text)
    a.axhline(CHANCE, color="0.5", lw=1, ls=":", label="chance")
    a.set(ylim=(0, 1.02), ylabel="test accuracy", title=f"What is trained, {n} seeds, 95% intervals")
    b.set(ylim=(0, 1.02), ylabel=f"fraction of channels with |γ| < {OFF:g} at the end",
          title="Features batch norm has turned off")
    for ax in (a, b):
        ax.set_xticks(range(len(SETS)), [textwrap.fill(t, 16) for t in SETS.values()], fontsize=8)
        ax.legend(fontsize=8)
    save(fig, outfile)


def only_bn_table(results: dict) -> str:
    config, momentum = results["config"], OnlyBnSettings.from_record(results["config"]).momentum
    lines = [
        f"The conv net with MyBN2d, {config['epochs']} epochs of batches of {config['batch_size']}, SGD with momentum "
        f"{momentum} at {config['lr']:g} on a cosine schedule, {len(config['seeds'])} seeds ({source(results)}): the "
        f"test accuracy (mean and 95% interval), and the fraction of channels whose |γ| ends below {OFF:g}. Below, "
        "seed by seed: γ and β only minus as many random other weights.",
        "",
    ]
    net = ConvNet("my_bn", 0)
    counts = {"all": sum(p.numel() for p in net.parameters()), "bn": sum(p.numel() for p in net.norms.parameters())}
    counts |= {"bn_head": counts["bn"] + sum(p.numel() for p in net.head.parameters()), "random": counts["bn"]}
    rows = [[text, f"{counts[which]:,}", interval(results, which).text(".3f"),
             interval(results, which, "off").text(".2f")] for which, text in SETS.items()]
    rows.append(["*γ and β only − random*", "", over_random(results).text("+.3f"), ""])
    for epochs in budgets(results)[1:]:  # the longer budgets: the two ways the verdict compares
        view = at_budget(results, epochs)
        rows += [[f"{SETS[w]}, {epochs} epochs", f"{counts[w]:,}", interval(view, w).text(".3f"),
                  interval(view, w, "off").text(".2f")] for w in DECIDING]
        rows.append([f"*γ and β only − random, {epochs} epochs*", "", over_random(view).text("+.3f"), ""])
    return "\n".join([*lines, table(("what is trained", "numbers trained per net", "test accuracy",
                                      "channels turned off"), rows)])


ABOVE_TRAINS = stats.Rule(TRAINS, "above")  # the test accuracy with γ and β only
ABOVE_RANDOM = stats.Rule(0.0, "above")  # γ and β only minus as many random other weights
RULES = {"γ and β train the net": ABOVE_TRAINS, "more than random weights": ABOVE_RANDOM}


def only_bn_verdict(results: dict) -> Verdict:
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        alone, gap = interval(view, "bn"), over_random(view)
        return (f"γ and β only {alone.text('.3f')}, minus random weights {gap.text('+.3f')}",
                [Part(f"above {TRAINS:g} ({budget})", "test accuracy, γ and β only", alone, ABOVE_TRAINS, budget),
                 Part(f"above random weights ({budget})", "test accuracy, γ and β only − as many random weights",
                      gap, ABOVE_RANDOM, budget)])

    measured, parts = per_budget(results, read)
    rule = (f"per seed: the test accuracy with γ and β only, holds where its interval lies above {TRAINS:g} (five "
            "times chance), does not hold where it lies below; and minus that with as many random other weights, "
            "holds above 0, does not hold below; else not decided; at each budget")
    return Verdict("γ and β alone train a net (Frankle et al. 2021)",
                   "with every other weight frozen at its random initialisation, training batch norm's γ and β "
                   "alone reaches far above chance, and far above as many random other weights",
                   f"test accuracy: {measured}", rule, parts, "[only_bn](docs/only_bn.md)")


EXPERIMENT = Experiment(
    name="only_bn",
    doc=__doc__,
    settings=OnlyBnSettings,
    run=run,
    figures=lambda results: {"only_bn.png": functools.partial(plot_only_bn, results)},
    tables=lambda results: {"only-bn-table": only_bn_table(results)},
    results_format=check_format,
    summary=only_bn_table,
    verdicts=lambda results: [only_bn_verdict(results)],
)
