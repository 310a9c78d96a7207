"""The regression task (y = a·x² + b + noise, a four-layer MLP): one (range, model, seed) run, a whole
experiment's runs side by side, and the queries its tables and figures ask of the results.

Every run is deterministic: its data, initial weights and batch order come from its seed, and the
thread count is fixed, so which process trains it changes nothing in the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lab.data import N_TRAIN, Dataset, make_dataset, overflow_problem, spread_noise_std
from lab.diagnostics import Diagnostics
from lab.loop import BatchOrder, fit, make_optimizer
from lab.nets import MLP_MODELS, MLPModel, TanhMLP
from lab.probe import Probe
from lab.results import LONGER
from lab.settings import (
    DTYPES,
    Settings,
    batch_int,
    finite_float,
    flag,
    non_negative_float,
    positive_float,
    positive_int,
    resolve_device,
    unit_float,
)
from lab.stats import mean_std
from lab.workers import environment, process_rank, run_pool


@dataclass
class Regression(Settings):
    """The regression task's settings, the main experiment's preset as their defaults: the data
    (y = a·x² + b + noise on each range), the nets, and how they train. The experiments on this task
    take these, each with its preset (``Regression.preset``)."""

    ranges: list[float] = flag([1.0, 5.0], "each R trains on inputs in (-R, R)", type=positive_float, metavar="R")
    models: list[str] = flag(["plain", "torch_bn", "my_bn"], "nets to train", metavar="MODEL",
                             choices=tuple(MLP_MODELS), labels={k: m.label for k, m in MLP_MODELS.items()})
    epochs: int = flag(10, "training epochs", type=positive_int)
    batch_size: int = flag(64, "mini-batch size", type=batch_int)
    lr: float | None = flag(
        0.02, "learning rate, of every range (an experiment's preset may choose one per range instead)",
        type=positive_float,
    )
    optimizer: str = flag("adam", "adam, or sgd (plain: no momentum)", choices=("adam", "sgd"))
    bn_momentum: float = flag(0.5, "momentum of the batch-norm layers, as in the original", type=unit_float)
    a: float = flag(1.0, "y = a·x² + b + noise: a", type=finite_float)
    b: float = flag(0.0, "y = a·x² + b + noise: b", type=finite_float)
    noise_std: float | None = flag(
        None, "noise std (default: 0.1 for R=1, 1.0 for R=5, 0.1·R^1.43 for other R)", type=non_negative_float
    )
    noise_scaled: float | None = flag(
        None,
        "noise std K·|a|·R², the same signal-to-noise ratio for every R (overrides --noise-std)",
        type=non_negative_float,
        metavar="K",
    )
    diagnostics: bool = flag(
        True,
        "record tanh-input percentiles, saturation and gradient norms per layer",
        action=argparse.BooleanOptionalAction,
    )

    def problem(self) -> str | None:
        """``Settings.problem``, then: a batch split over ``nproc`` processes too thin for per-process batch
        norm, and data the dtype cannot hold."""
        found = Settings.problem(self)  # not super(): preset classes without some fields share this function
        if found:
            return found
        if self.nproc > 1:
            smallest = min(len(b) for b in BatchOrder(N_TRAIN, self.batch_size, 1, 0)[0]) // self.nproc
            local_bn = [m for m in self.models if MLP_MODELS[m].norm is not None and not MLP_MODELS[m].sync]
            if smallest < (2 if local_bn else 1):
                why = f"the per-process batch norm of {local_bn[0]}" if local_bn else "a process to train on"
                return (f"argument --nproc: with --batch-size {self.batch_size}, a batch split over {self.nproc} "
                        f"processes leaves {smallest} sample(s) to some process, too few for {why}")
        for r in self.ranges:
            found = overflow_problem(r, self.a, self.b, noise_std_of(self, r), DTYPES[self.dtype])
            if found:
                return f"arguments --ranges/--a/--b/--noise-std/--dtype: {found}"
        return None


@dataclass(frozen=True)
class Scaling:
    """The affine maps a model applies to the data: identity, or standardisation by training-set stats."""

    x_mean: float = 0.0
    x_std: float = 1.0
    y_mean: float = 0.0
    y_std: float = 1.0

    @classmethod
    def for_model(cls, model: MLPModel, data: Dataset) -> Scaling:
        x, y = data.x_train.double(), data.y_train.double()
        return cls(
            *((x.mean().item(), x.std().item()) if model.standardize_x else (0.0, 1.0)),
            y.mean().item() if model.standardize_y or model.center_y else 0.0,
            y.std().item() if model.standardize_y or model.scale_y else 1.0,
        )

    def x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_mean) / self.y_std

    def y_back(self, y_scaled: torch.Tensor) -> torch.Tensor:
        return y_scaled * self.y_std + self.y_mean


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scaling: Scaling) -> tuple[torch.Tensor, torch.Tensor]:
    """Test MSE, in the units of y, and predictions in eval mode (batch norm uses its running statistics)."""
    net.eval()
    pred = scaling.y_back(net(scaling.x(x)))
    return nn.functional.mse_loss(pred, y), pred


def train_one(
    net: TanhMLP,
    data: Dataset,
    order: Sequence[list[torch.Tensor]],
    lr: float,
    optimizer: str = "adam",
    probes: Sequence[Probe] = (),
) -> dict:
    """Adam (or SGD) on MSE over the given batches (``fit``); test MSE before training and after every epoch.

    In a torch.distributed group each process trains on its slice of every batch (the tanh inputs the
    diagnostics see are then this process's share; a probe's ``measure`` is given the whole batch),
    and evaluates the same net on its own.
    """
    device = next(net.parameters()).device
    scaling = Scaling.for_model(MLP_MODELS[net.model], data)
    x_train, y_train = scaling.x(data.x_train.to(device)), scaling.y(data.y_train.to(device))
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    rank, world = process_rank()
    model = net if world == 1 else DistributedDataParallel(net)

    def batch_loss(idx: torch.Tensor):
        idx = idx.to(device)
        if world == 1:
            x, y = x_train[idx], y_train[idx]
            loss = nn.functional.mse_loss(model(x), y)
            return loss, loss, x, y
        share = idx.tensor_split(world)[rank]  # this process's slice; DDP averages the gradients over the processes
        squares = (model(x_train[share]) - y_train[share]).square().sum()
        recorded = squares.detach().clone()
        dist.all_reduce(recorded)
        # scaled so that the average over the processes is the whole batch's mean loss
        return squares * (world / len(idx)), recorded / len(idx), x_train[idx], y_train[idx]

    test_mse = [evaluate(net, x_test, y_test, scaling)[0]]
    opt = make_optimizer(optimizer, net, lr)

    def after_epoch(_epoch: int) -> None:
        test_mse.append(evaluate(net, x_test, y_test, scaling)[0])

    train_loss = fit(net, opt, order, batch_loss, probes, after_epoch)
    pred = evaluate(net, x_test, y_test, scaling)[1]
    return {
        "test_mse": torch.stack(test_mse).tolist(),
        "train_loss": (torch.stack(train_loss) * scaling.y_std**2).tolist(),  # in the units of y²
        "predictions": pred.squeeze(1).tolist(),
        **{probe.name: probe.results() for probe in probes},
    }


def noise_std_of(config: Regression, r: float) -> float | None:
    """The noise std for range R: --noise-scaled, else --noise-std, else the data's default (None)."""
    if config.noise_scaled is not None:
        return spread_noise_std(r, config.noise_scaled, config.a)
    return config.noise_std


def dataset_for(config: Regression, r: float, seed: int) -> Dataset:
    return make_dataset(r, seed, a=config.a, b=config.b, noise_std=noise_std_of(config, r), dtype=DTYPES[config.dtype])


def train_run(config: Regression, job: tuple[float, str, int], probe: Callable[..., Probe] | None = None) -> dict:
    """One (range, model, seed), from nothing but the config: a worker process can run it alone.

    The run carries the ``Diagnostics`` probe unless ``config.diagnostics`` is off, and the probe
    ``probe(net, data, config)`` makes, if given.
    """
    r, model, seed = job
    data = dataset_for(config, r, seed)
    order = BatchOrder(len(data.x_train), config.batch_size, config.epochs, seed)
    net = TanhMLP(model, seed, bn_momentum=config.bn_momentum, dtype=DTYPES[config.dtype],
                  mybn_backend=config.mybn_backend)
    net = net.to(resolve_device(config.device))
    probes = [Diagnostics(net)] if config.diagnostics else []
    probes += [probe(net, data, config)] if probe else []
    result = train_one(net, data, order, config.lr, config.optimizer, probes)
    return {"range": [-r, r], "model": model, "seed": seed, **result}


def run_experiment(
    config: Regression, log: Callable[[str], None] = print, probe: Callable[..., Probe] | None = None
) -> dict:
    """Train every (range, model, seed) of ``config``, each watched by ``probe`` if given (see
    ``train_run``); return the results as a JSON-able dict."""
    start = time.perf_counter()
    datasets = [dataset_entry(config, r, s) for r in config.ranges for s in config.seeds]
    jobs = [(r, model, s) for r in config.ranges for model in config.models for s in config.seeds]
    runs = []
    with run_pool(config, len(jobs)) as pool_map:
        for run in pool_map(functools.partial(train_run, config, probe=probe), jobs):
            runs.append(run)
            if run["seed"] == config.seeds[-1]:  # a (range, model) is complete: report it
                r, model = run["range"][1], run["model"]
                finals = [x["test_mse"][-1] for x in runs if x["range"][1] == r and x["model"] == model]
                mean, std = mean_std(finals)
                floor = next(d["noise_std"] for d in datasets if d["range"][1] == r) ** 2
                log(
                    f"range (-{r:g}, {r:g})  {model:<12}  {len(finals)} seed(s)  final test MSE "
                    f"{mean:.4g} ± {std:.2g}  (noise floor {floor:.4g})  [{time.perf_counter() - start:.1f} s]"
                )
    config_dict = dataclasses.asdict(config)
    return {"config": config_dict, "environment": environment(config), "datasets": datasets, "runs": runs}


def run_with_longer(config: Regression, log: Callable[[str], None], probe: Callable[..., Probe], r: float,
                    models: Sequence[str]) -> dict:
    """``run_experiment`` at the settings' epochs, and at each of their ``long_epochs`` the runs a verdict
    reads at every budget, ``models`` on range ``r`` (those of them the settings have), in the results'
    ``LONGER``: a run's curves are as long as its training, so each budget's runs are a list of their own,
    each run with its ``epochs``."""
    results = run_experiment(config, log, probe=probe)
    models = [m for m in models if m in config.models]
    longer = {}
    budgets = set(getattr(config, "long_epochs", ())) - {config.epochs}  # a preset of its own names them
    for epochs in sorted(budgets) if r in config.ranges and models else ():
        extra = run_experiment(dataclasses.replace(config, epochs=epochs, ranges=[r], models=models), log, probe)
        longer[str(epochs)] = [{**run, "epochs": epochs} for run in extra["runs"]]
    return {**results, LONGER: longer}


def dataset_entry(config: Regression, r: float, seed: int) -> dict:
    """What a results file keeps of a dataset: its range, seed, noise and test set."""
    d = dataset_for(config, r, seed)
    return {"range": [-r, r], "seed": seed, "noise_std": d.noise_std,
            "x_test": d.x_test.squeeze(1).tolist(), "y_test": d.y_test.squeeze(1).tolist()}


def ranges_of(results: dict) -> list[float]:
    return list(dict.fromkeys(run["range"][1] for run in results["runs"]))


def models_of(results: dict) -> list[str]:
    return list(dict.fromkeys(run["model"] for run in results["runs"]))


def runs_of(results: dict, r: float, model: str) -> list[dict]:
    return [run for run in results["runs"] if run["range"][1] == r and run["model"] == model]


def dataset_of(results: dict, r: float, seed: int) -> dict:
    return next(d for d in results["datasets"] if d["range"][1] == r and d["seed"] == seed)


def fit_spread(results: dict, run: dict) -> float:
    """std of a net's predictions over the test inputs ÷ std of the test targets: 0 is a constant fit."""
    data = dataset_of(results, run["range"][1], run["seed"])
    return (torch.tensor(run["predictions"]).std() / torch.tensor(data["y_test"]).std()).item()


def relative_gap(values: list[float], reference: list[float]) -> torch.Tensor:
    """|values − reference| / reference, element by element, in float64."""
    if len(values) != len(reference):
        raise ValueError(f"runs to compare differ in length ({len(values)} and {len(reference)} values)")
    ref = torch.tensor(reference, dtype=torch.float64)
    return (torch.tensor(values, dtype=torch.float64) - ref).abs() / ref


def final_mse(run: dict) -> float:
    """A run's final test MSE."""
    return run["test_mse"][-1]


def summarize(results: dict) -> list[dict]:
    """One row per (range, model): final test MSE mean ± std over seeds, and the noise floor."""
    floors = {}
    for d in results["datasets"]:
        floors.setdefault(d["range"][1], []).append(d["noise_std"] ** 2)
    finals: dict[tuple[float, str], list[float]] = {}
    for run in results["runs"]:
        finals.setdefault((run["range"][1], run["model"]), []).append(run["test_mse"][-1])
    rows = []
    for (r, model), values in finals.items():
        mean, std = mean_std(values)
        kept = [v for v in values if math.isfinite(v)]
        rows.append({"range": r, "model": model, "seeds": len(values), "mean": mean, "std": std,
                     "diverged": len(values) - len(kept), "finite": mean_std(kept) if kept else None,
                     "noise_floor": sum(floors[r]) / len(floors[r])})
    return rows


def format_table(rows: list[dict]) -> str:
    """The summary as aligned text for the terminal; seeds whose test MSE is not finite are counted
    apart (the mean ± std is over the others), not averaged into a NaN."""
    lines = [f"{'range':<10} {'model':<12} {'seeds':>5}  {'final test MSE':>22}  {'noise floor':>11}"]
    for row in rows:
        rng = f"(-{row['range']:g}, {row['range']:g})"
        mse = "diverged" if row["finite"] is None else "{:.4g} ± {:.2g}".format(*row["finite"])
        gone = f"  ({row['diverged']} of {row['seeds']} diverged)" if row["diverged"] and row["finite"] else ""
        lines.append(f"{rng:<10} {row['model']:<12} {row['seeds']:>5}  {mse:>22}  {row['noise_floor']:>11.4g}{gone}")
    return "\n".join(lines)

