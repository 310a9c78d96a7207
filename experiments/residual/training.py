"""The residual experiment's settings, its measurement at initialisation (signal propagation, block by block)
and its training (every variant at every depth and rate, the seeds of a cell as one grouped ``ResNet``), and
what a run records."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from experiments.record import checked_runs
from lab.data import digits_standardised
from lab.loop import cosine, fit_members, member_correct, precise_statistics, steps_per_epoch
from lab.resnets import VARIANTS, ResNet
from lab.results import pack_items, rounded
from lab.settings import Settings, batch_int, flag, positive_float, positive_int, seed_int, unit_float
from lab.workers import environment, run_pool

TRAINS = 0.5  # a run trains when it ends with at least this test accuracy (five times chance; the conv experiment's)
ITEMS, PRECISE = "test_items", "precise_items"  # which test digits a run got right: eval mode; on precise statistics
EIGHT_SEEDS = list(range(8))
LONG = ("skipinit", "fixup", "my_bn", "my_bn_noskip")  # what trains at the longer budgets: at the deepest depth, at
# the common rate (the largest-rate rows are read at the preset's budget alone: their grids at a longer budget do not
# fit the main command's ten minutes)


@dataclass
class ResidualSettings(Settings):
    """The residual experiment's settings: its nets, depths, rates and recipe, its preset as the defaults."""

    variants: list[str] = flag(list(VARIANTS), "the nets", metavar="VARIANT", choices=tuple(VARIANTS),
                               labels={v: VARIANTS[v].label for v in VARIANTS})
    depths: list[int] = flag([4, 12], "residual blocks of the nets trained (each of two convolutions)",
                             type=positive_int, metavar="L")
    init_depths: list[int] = flag([4, 16, 64], "residual blocks of the nets measured at initialisation (signal "
                                  "propagation; no training)", type=positive_int, metavar="L")
    width: int = flag(8, "channels of every block", type=positive_int)
    rates: list[float] = flag([0.1, 0.3, 1.0, 3.0], "the learning rates every net trains at (half a decade apart): "
                              "the largest at which a net trains is read off them", type=positive_float, metavar="LR")
    common_rate: float = flag(0.1, "the rate of the rates at which every net's test accuracy is compared",
                              type=positive_float)
    epochs: int = flag(2, "training epochs", type=positive_int)
    long_epochs: list[int] = flag([4], "longer budgets, in epochs: at the deepest depth and the common rate, SkipInit, "
                                  "Fixup, and MyBN2d with and without skips train again; none: --long-epochs alone",
                                  type=positive_int, nargs="*", metavar="E")
    batch_size: int = flag(32, "batch size", type=batch_int)
    momentum: float = flag(0.9, "SGD momentum (on a cosine schedule from the rate to 0)", type=unit_float)
    init_batch: int = flag(128, "the batch of training digits each seed's nets are measured on at initialisation",
                           type=batch_int)
    seeds: list[int] = flag(EIGHT_SEEDS, "seeds: initial weights, batch order (a largest rate is grid-valued: a sign "
                            "test decides on 8 seeds all on one side, p = 1/256, not on 5: lab/stats.py; 10 do not fit "
                            "the main command's ten minutes)", type=seed_int, metavar="SEED")
    device: str = flag("cpu", "cpu only")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {"device": ("cpu", "it runs on the CPU"),
                                                     "nproc": (1, "each cell trains in one process")}

    def problem(self) -> str | None:
        if self.common_rate not in self.rates:
            return f"argument --common-rate: one of --rates ({', '.join(f'{r:g}' for r in self.rates)})"
        return super().problem()


def settings_of(results: dict) -> ResidualSettings:
    """The settings its results record (an older file's missing ones: the preset's)."""
    return ResidualSettings.from_record(results["config"])


# ---------------------------------------------------------------------------------------------- at initialisation


def per_member(t: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K·C, H, W) -> (K, C, N·H·W): each member's channels, each channel's values."""
    return t.unflatten(1, (k, -1)).permute(1, 2, 0, 3, 4).flatten(2)


@torch.no_grad()
def propagation(config, variant: str, depth: int) -> list[dict]:
    """Every seed's net of ``variant`` at ``depth`` blocks, at initialisation, in training mode (batch
    norm on the batch's statistics), on ``init_batch`` training digits (a seeded draw per seed): per block l, the
    stream's mean squared activation E[x_l²] and its average channel variance (Brock et al. 2021's signal-
    propagation plots), and the branch's contribution's average channel variance over the stream's
    (De & Smith 2020's downscaling, ~1/(l + 1) for batch norm)."""
    x_train = digits_standardised(torch.float32)[0]
    idx = torch.stack([torch.randperm(len(x_train), generator=torch.Generator().manual_seed(20_000 + s))
                       [:config.init_batch] for s in config.seeds], 1)  # (B, K)
    net = ResNet(variant, config.seeds, depth=depth, width=config.width).train()
    trace: list = []
    net(x_train[idx], trace)
    k = len(config.seeds)
    sq, var, ratio = [], [], []
    for x, f in trace:
        xs, fs = per_member(x, k), per_member(f, k)
        sq.append(xs.square().mean((1, 2)))  # (K,)
        var.append(xs.var(2, correction=0).mean(1))
        ratio.append(fs.var(2, correction=0).mean(1) / var[-1])
    columns = [torch.stack(v, 1) for v in (sq, var, ratio)]  # (K, depth) each
    return [{"model": variant, "depth": depth, "seed": s,
             **{key: [rounded(v) for v in col[j].tolist()] for key, col in zip(("stream_sq", "stream_var", "ratio"),
                                                                               columns, strict=True)}}
            for j, s in enumerate(config.seeds)]


# ---------------------------------------------------------------------------------------------- under training


def cells(config) -> list[tuple[str, int, float, int]]:
    """Every (variant, depth, rate, epochs) trained: each variant with skips at each depth and rate, those without
    at the deepest depth (the deep net without skips is the one Yang et al. speak of); at the longer budgets,
    those of ``LONG`` at the deepest depth and the common rate; the slowest (most blocks and steps, batch norm)
    first, so that the worker processes end together."""
    deepest = max(config.depths)
    todo = [(v, d, lr, config.epochs) for v in config.variants for d in config.depths for lr in config.rates
            if VARIANTS[v].skip or d == deepest]
    todo += [(v, deepest, config.common_rate, e) for e in config.long_epochs for v in config.variants if v in LONG]
    return sorted(dict.fromkeys(todo), key=lambda c: (-c[1] * c[3], VARIANTS[c[0]].norm == "plain"))


def train_cell(config, cell: tuple[str, int, float, int]) -> list[dict]:
    """One (variant, depth, rate, epochs) for every seed, as one grouped ``ResNet`` (each member its seed's net on
    its seed's batches): SGD with momentum on a cosine schedule; one run record a seed."""
    variant, depth, lr, epochs = cell
    x_train, y_train, x_test, y_test = digits_standardised(torch.float32)
    net = ResNet(variant, config.seeds, depth=depth, width=config.width, mybn_backend=config.mybn_backend)
    steps = epochs * steps_per_epoch(config.batch_size, len(x_train))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.momentum)
    losses = fit_members(net, opt, x_train, y_train, config.batch_size, epochs, cosine(lr, steps))
    last = torch.stack(losses[-steps // epochs:]).double().mean(0)  # each member's, over the last epoch
    items = {ITEMS: member_correct(net, x_test, y_test)}  # (N, K)
    # eval mode on statistics recomputed over the training set with the final weights (without batch norm: its eval
    # mode again)
    items[PRECISE] = member_correct(precise_statistics(net, x_train), x_test, y_test) if net.norms else items[ITEMS]
    test_acc = items[ITEMS].double().mean(0)
    return [{"model": variant, "depth": depth, "lr": lr, "epochs": epochs, "seed": s,
             "test_acc": rounded(test_acc[j].item()), "loss": rounded(last[j].item()),
             **{k: pack_items(v[:, j].tolist()) for k, v in items.items()}}
            for j, s in enumerate(config.seeds)]


def job(config, item: tuple) -> list[dict]:
    """One job of the pool: ("init", variant, depth), a measurement at initialisation, or ("train", *cell)."""
    return propagation(config, *item[1:]) if item[0] == "init" else train_cell(config, item[1:])


def run(config, log=print) -> dict:
    digits_standardised(torch.float32)  # loaded once here, before the workers fork
    todo = [("train", *cell) for cell in cells(config)]
    todo += [("init", v, d) for d in sorted(config.init_depths, reverse=True) for v in config.variants]
    init, runs = [], []
    with run_pool(config, len(todo)) as pool_map:
        for item, records in zip(todo, pool_map(functools.partial(job, config), todo), strict=True):
            if item[0] == "init":
                init += records
                continue
            runs += records
            _, variant, depth, lr, epochs = item
            mean = sum(m["test_acc"] for m in records) / len(records)
            log(f"residual: {variant:<13} {depth:>3} blocks  lr {lr:<4g} {epochs:>2} epochs  test accuracy {mean:.3f} "
                f"(mean of {len(records)} seeds)")
    return {"config": dataclasses.asdict(config), "environment": environment(config), "datasets": [],
            "initialisation": {str(d): sorted((r for r in init if r["depth"] == d),  # by depth: one shape a list
                                              key=lambda r: (r["model"], r["seed"]))
                               for d in sorted(config.init_depths)},
            "runs": sorted(runs, key=lambda r: (r["model"], r["depth"], r["lr"], r["epochs"], r["seed"]))}


def check_format(results: dict) -> None:
    """What the figures and tables read, named where it is missing (its record's ``results_format``)."""
    for i, run_ in enumerate(checked_runs(results, tuple(VARIANTS))):
        if not all(isinstance(run_.get(k), int) for k in ("depth", "epochs", "seed")):
            raise ValueError(f"runs[{i}]: needs integers 'depth', 'epochs' and 'seed'")
        if not all(isinstance(run_.get(k), (int, float)) for k in ("lr", "test_acc", "loss")):
            raise ValueError(f"runs[{i}]: needs numbers 'lr', 'test_acc' and 'loss'")
        if not all(isinstance(run_.get(k), str) for k in (ITEMS, PRECISE)):
            raise ValueError(f"runs[{i}]: needs {ITEMS!r} and {PRECISE!r}, which test digits it got right (on the "
                             "running averages, on precise statistics)")
    init = results.get("initialisation")
    if not isinstance(init, dict) or not init or not all(k.isdigit() and isinstance(v, list) and v
                                                         for k, v in init.items()):
        raise ValueError("'initialisation' must map each depth measured at initialisation to its non-empty list of "
                         "nets")
    for depth, records in init.items():
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or rec.get("model") not in VARIANTS or not all(
                    isinstance(rec.get(k), list) and len(rec[k]) == int(depth) for k in ("stream_sq", "stream_var",
                                                                                         "ratio")):
                raise ValueError(f"initialisation.{depth}[{i}]: a variant's 'stream_sq', 'stream_var' and 'ratio', "
                                 "one per block")


def part_of(results: dict, run: dict) -> str:
    """The part of the design a run belongs to (the tidy CSV's ``part``): the grid, or a longer budget."""
    return "grid" if run["epochs"] == settings_of(results).epochs else "longer budget"
