"""The conv experiment's settings and training: its grid of cells, each trained for every seed as one
grouped ``ConvNet``, and what a run records."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from experiments.record import checked_runs
from lab.data import digits_standardised
from lab.loop import (
    ClassBatchOrder,
    cosine,
    fit_members,
    member_accuracy,
    member_correct,
    precise_statistics,
    steps_per_epoch,
)
from lab.nets import ConvNet
from lab.norms import NORMS
from lab.probe import Probe, Step
from lab.results import pack_items, rounded
from lab.settings import (
    DTYPES,
    Settings,
    batch_int,
    flag,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_float,
)
from lab.workers import environment, run_pool

BATCH_STATS = ("my_bn", "renorm", "ghost")  # the norms whose training mode normalises with the batch's statistics
SWEEP = ("plain", "my_bn")  # the nets of the learning-rate sweep at the base batch size
HELD = "my_bn_held"  # MyBN2d with each filter's norm held at its initial value (HeldNorms), at rates of the sweep
NONIID = {"my_bn_noniid": "my_bn", "renorm_noniid": "renorm"}  # trained on non-i.i.d. batches -> its layer
LAYER = {HELD: "my_bn", **NONIID}  # a cell's model -> the norm its net is built with (the others: their own)
TRAINS = 0.5  # a run trains when it ends with at least this test accuracy (five times chance)
SMALL, REFERENCE = 2, 8  # "batch norm needs the batch": its accuracy at SMALL against that at REFERENCE
ITEMS = {"test_acc": "test_items", "train_mode_acc": "train_mode_items"}  # an accuracy's per-digit record
PRECISE = "precise_items"  # the test digits in eval mode on precise statistics (lab/loop.py, precise_statistics)


@dataclass
class ConvSettings(Settings):
    """The conv experiment's settings: its grid and training recipe, its preset as the defaults."""

    epochs: int = flag(4, "training epochs", type=positive_int)
    long_epochs: list[int] = flag([12], "longer budgets, in epochs: the cells that decide a verdict row train at "
                                  "each too (MyBN2d, GroupNorm and Batch Renorm at batch 2 and 8, ghost BN and MyBN2d "
                                  "where ghost BN trains, the rate sweep, the non-i.i.d. cells); none: --long-epochs "
                                  "alone",
                                  type=positive_int, nargs="*", metavar="E")
    lr: float = flag(0.1, "learning rate at the base batch size: lr · B / base at batch B", type=positive_float)
    base_batch: int = flag(32, "the base batch size: whose rate lr is, and where the rate sweep runs", type=batch_int)
    momentum: float = flag(0.9, "SGD momentum", type=unit_float)
    bn_momentum: float = flag(0.1, "momentum of the batch-norm layers' running estimates", type=unit_float)
    norms: list[str] = flag(["plain", "my_bn", "group_norm", "layer_norm", "renorm"],
                            "the norms trained at every batch size", metavar="NORM",
                            choices=tuple(n for n in NORMS if n != "ghost"),
                            labels={n: NORMS[n].label for n in NORMS})
    batch_sizes: list[int] = flag([2, 8, 32, 128], "the batch sizes every norm trains at", type=batch_int, metavar="B")
    ghost_batch: int = flag(8, "ghost batch norm's ghost batch size G", type=batch_int)
    ghost_at: list[int] = flag([32, 128], "the batch sizes ghost batch norm trains at", type=batch_int, metavar="B")
    lr_factors: list[float] = flag([1.0, 3.0, 10.0, 30.0, 100.0], "the learning-rate sweep at the base batch size, "
                                   "plain and MyBN2d: lr times these", type=positive_float, metavar="F")
    held_factors: list[float] = flag([10.0, 30.0], "rates of the sweep (lr times these) at which MyBN2d trains "
                                     "again with each filter's norm held at its initial value (projected back after "
                                     "every step), so that its effective rate cannot tune itself down: the rates where "
                                     "MyBN2d trains and the plain net does not", type=positive_float, nargs="*",
                                     metavar="F")
    noniid_classes: int = flag(2, "non-i.i.d. batches: MyBN2d and Batch Renorm train again at the base batch size "
                               "on batches each drawn from this many classes, batch / classes digits of each "
                               "(lab.loop.ClassBatchOrder; after Ioffe 2017); 0: not at all", type=non_negative_int)
    sweep_more: int = flag(5, "seeds the learning-rate sweep trains beyond --seeds (the next after the largest): "
                           "its outcome is grid-valued, and a sign test needs more than 5 seeds to decide "
                           "(lab/stats.py)", type=non_negative_int)
    r_max: float = flag(3.0, "Batch Renormalization's clip of r (the paper's)", type=positive_float)
    d_max: float = flag(5.0, "Batch Renormalization's clip of d (the paper's)", type=non_negative_float)
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {"device": ("cpu", "it runs on the CPU"),
                                                     "nproc": (1, "each cell trains in one process")}

    def problem(self) -> str | None:
        """A number of classes a batch cannot be drawn from; then the settings' own checks."""
        if self.noniid_classes and not 1 <= self.noniid_classes <= min(10, self.base_batch // 2):
            return (f"argument --noniid-classes: a batch of {self.base_batch} can be drawn from 1 to "
                    f"{min(10, self.base_batch // 2)} of the 10 classes, at least 2 digits of each (0: none), not "
                    f"{self.noniid_classes}")
        return super().problem()


def settings_of(results: dict) -> ConvSettings:
    """The settings its results record (an older file's missing ones: the preset's)."""
    return ConvSettings.from_record(results["config"])


def sweep_seeds(settings: ConvSettings) -> list[int]:
    """The seeds of the learning-rate sweep: the settings' seeds, and ``sweep_more`` after the largest."""
    return [*settings.seeds, *range(max(settings.seeds) + 1, max(settings.seeds) + 1 + settings.sweep_more)]


def renorm_warmup(steps: int) -> tuple[int, int, int]:
    """Batch Renormalization's warm-up for a run of ``steps`` steps: the paper's (r_max = 1, d_max = 0
    for 5,000 steps, d_max = 5 by 25,000, r_max = 3 by 40,000) with its 40,000 steps put at half the run."""
    return steps // 16, steps // 2, 5 * steps // 16


def scaled_lr(settings: ConvSettings, batch_size: int, factor: float = 1.0) -> float:
    """The learning rate at ``batch_size``, the settings' lr being that at their base batch size (times
    ``factor``), to 12 digits (0.3, not 0.30000000000000004)."""
    return rounded(settings.lr * factor * batch_size / settings.base_batch, 12)


def deciding(config, norm: str, batch_size: int) -> bool:
    """Whether the cell (norm, batch size) at the base rate decides a verdict row, so that it trains at the
    longer budgets too (the rate sweep's cells at other rates, MyBN2d's with its norms held, and the
    non-i.i.d. cells do as well)."""
    return ((norm in ("my_bn", "group_norm", "renorm") and batch_size in (SMALL, REFERENCE))
            or (norm in ("ghost", "my_bn") and batch_size in config.ghost_at)
            or sweep_seeded(config, norm, batch_size))


def sweep_seeded(config, norm: str, batch_size: int) -> bool:
    """Whether the cell trains the sweep's seeds (``sweep_seeds``): the learning-rate sweep's cells, and the
    non-i.i.d. ones, compared with the sweep's MyBN2d at the base rate (their outcomes vary from seed to
    seed far more than the grid's)."""
    return norm in (*SWEEP, HELD, *NONIID) and batch_size == config.base_batch


def part_of(results: dict, run: dict) -> str:
    """The part of the design a run belongs to (the tidy CSV's ``part``): the grid (every norm at every batch
    size at its rate, ghost BN where it trains, the settings' seeds), the learning-rate sweep (plain and
    MyBN2d at the base batch size at the other rates, and the seeds the sweep adds at the base rate: the
    sweep there is these and the grid's cell), the norms held, or the non-i.i.d. batches."""
    settings = settings_of(results)
    if run["model"] == HELD:
        return "norms held"
    if run["model"] in NONIID:
        return "non-i.i.d. batches"
    if run["model"] in SWEEP and run["batch_size"] == settings.base_batch and (
            run["lr"] != scaled_lr(settings, run["batch_size"]) or run["seed"] not in settings.seeds):
        return "learning-rate sweep"
    return "grid"


class HeldNorms(Probe):
    """After every step, each convolution's filters (one a row of its weight: an output channel of a member)
    scaled back to the norm they started with. Batch norm after the convolution makes the net's function
    blind to that scale, so the step is kept and only the growth of ‖w‖ that would shrink the next steps
    (the effective rate η/‖w‖², Arora, Li & Lyu 2019) is undone."""

    name = "held_norms"

    def __init__(self, net: ConvNet):
        self.weights = [conv.weight for conv in net.convs]
        self.norms = [w.detach().flatten(1).norm(dim=1, keepdim=True) for w in self.weights]

    @torch.no_grad()
    def stepped(self, step: Step) -> None:
        for w, norm in zip(self.weights, self.norms, strict=True):
            rows = w.view(len(w), -1)
            rows.mul_(norm / rows.norm(dim=1, keepdim=True))


def cells(config) -> list[tuple[str, int, float, int]]:
    """Every (norm, batch size, learning rate, epochs) trained: the grid at ``epochs``, and the cells that
    decide a row at each of ``long_epochs``; the slowest (most steps) first so that the worker processes
    end together."""
    base = config.base_batch
    grid = [(norm, b, scaled_lr(config, b)) for norm in config.norms for b in config.batch_sizes]
    grid += [("ghost", b, scaled_lr(config, b)) for b in config.ghost_at]
    grid += [(norm, base, scaled_lr(config, base, f)) for norm in SWEEP for f in config.lr_factors]
    grid += [(HELD, base, scaled_lr(config, base, f)) for f in config.held_factors]
    grid += [(model, base, scaled_lr(config, base)) for model in NONIID if config.noniid_classes]
    todo = [(*cell, config.epochs) for cell in grid]
    todo += [(*cell, e) for e in config.long_epochs for cell in grid if deciding(config, *cell[:2])]
    return sorted(dict.fromkeys(todo), key=lambda c: (-c[3] / c[1], c[0] != "renorm"))


def train_cell(config, cell: tuple[str, int, float, int]) -> list[dict]:
    """One (norm, batch size, learning rate, epochs) for every seed, as one ``ConvNet`` of one member a
    seed (each member its seed's net on its seed's batches); one run record a seed."""
    norm, batch_size, lr, epochs = cell
    x_train, y_train, x_test, y_test = digits_standardised(DTYPES[config.dtype])
    seeds = sweep_seeds(config) if sweep_seeded(config, norm, batch_size) else list(config.seeds)
    batches = (lambda s: ClassBatchOrder(y_train, batch_size, epochs, s, config.noniid_classes)) if norm in NONIID \
        else None  # None: fit_members' own BatchOrder
    steps = epochs * (len(batches(seeds[0])[0]) if batches else steps_per_epoch(batch_size, len(x_train)))
    renorm = (config.r_max, config.d_max, renorm_warmup(steps))
    net = ConvNet(LAYER.get(norm, norm), seeds, bn_momentum=config.bn_momentum, renorm=renorm,
                  ghost_batch_size=config.ghost_batch, mybn_backend=config.mybn_backend, dtype=DTYPES[config.dtype])
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum)
    losses = fit_members(net, opt, x_train, y_train, batch_size, epochs, cosine(lr, steps),
                         [HeldNorms(net)] if norm == HELD else [], order=batches)
    last = torch.stack(losses[-steps // epochs:]).double().mean(0)  # each member's, over the last epoch
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(0))  # the test batches' order
    items = {"test_items": member_correct(net, x_test, y_test),  # (N, K), in the test set's order
             "train_mode_items": member_correct(net, x_test[order], y_test[order], batch_size)[order.argsort()]}
    # eval mode on statistics recomputed over the training set with the final weights (a norm without running
    # estimates: its eval mode again)
    items[PRECISE] = member_correct(precise_statistics(net, x_train), x_test, y_test)
    measured = {"test_acc": items["test_items"].double().mean(0), "train_acc": member_accuracy(net, x_train, y_train),
                "train_mode_acc": items["train_mode_items"].double().mean(0), "loss": last}
    return [{"model": norm, "batch_size": batch_size, "lr": lr, "epochs": epochs, "seed": s,
             **{k: rounded(v[j].item()) for k, v in measured.items()},
             **{k: pack_items(v[:, j].tolist()) for k, v in items.items()}} for j, s in enumerate(seeds)]


def run(config, log=print) -> dict:
    digits_standardised(DTYPES[config.dtype])  # loaded once here, before the workers fork
    todo, runs = cells(config), []
    with run_pool(config, len(todo)) as pool_map:
        for (norm, batch_size, lr, epochs), members in zip(todo, pool_map(functools.partial(train_cell, config),
                                                                           todo), strict=True):
            runs += members
            mean = sum(m["test_acc"] for m in members) / len(members)
            log(f"conv: {norm:<10} batch {batch_size:>3}  lr {lr:<7g} {epochs:>2} epochs  test accuracy {mean:.3f} "
                f"(mean of {len(members)} seeds)")
    x_train, _, x_test, _ = digits_standardised(DTYPES[config.dtype])
    return {"config": dataclasses.asdict(config), "environment": environment(config),
            "split": {"train": len(x_train), "test": len(x_test), "seed": 0,
                      "pixels": "standardised by the training set's mean and std"},
            "datasets": [], "runs": sorted(runs, key=lambda r: (r["model"], r["batch_size"], r["lr"], r["epochs"],
                                                                r["seed"]))}


def check_format(results: dict) -> None:
    """What the figures and tables read, named where it is missing (its record's ``results_format``)."""
    for i, run_ in enumerate(checked_runs(results, (*NORMS, *LAYER))):
        if not all(isinstance(run_.get(k), int) for k in ("batch_size", "epochs", "seed")):
            raise ValueError(f"runs[{i}]: needs integers 'batch_size', 'epochs' and 'seed'")
        if not all(isinstance(run_.get(k), (int, float)) for k in ("lr", "test_acc", "train_acc", "train_mode_acc")):
            raise ValueError(f"runs[{i}]: needs numbers 'lr', 'test_acc', 'train_acc' and 'train_mode_acc'")
        if not isinstance(run_.get(PRECISE), str):
            raise ValueError(f"runs[{i}]: needs {PRECISE!r}, its test digits on precise statistics: rerun "
                             "`python train.py conv`")
        if not all(isinstance(run_.get(k), str) for k in ITEMS.values()):
            raise ValueError(f"runs[{i}]: needs {' and '.join(map(repr, ITEMS.values()))}, which test digits it got "
                             "right: rerun `python train.py conv`")
