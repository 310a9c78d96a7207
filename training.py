"""The training loop shared by the experiments: one (range, model, seed) run, and a whole experiment's
runs side by side in worker processes.

Every run is deterministic: its data, initial weights and batch order come from its seed, and the
thread count is fixed, so which process trains it changes nothing in the results.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import math
import multiprocessing as mp
import os
import platform
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import my_bn
import numerics
import progress
from bn_pytorch import VARIANTS, ConvNet, TanhMLP, Variant
from config import DTYPES, Config, resolve_device
from data import N_TRAIN, Dataset, make_dataset, spread_noise_std
from diagnostics import Diagnostics
from probe import Probe, loop
from results import mean_std


class BatchOrder(Sequence):
    """Index batches for every epoch, reshuffled each epoch, shared by all nets of one seed.

    Each epoch's order is drawn when the epoch starts, so memory does not grow with the number of
    epochs; iterating again replays the same orders from the seed. A final batch of a single sample
    is merged into the one before it: batch norm cannot take statistics over one value per channel.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int):
        self.n, self.batch_size, self.epochs, self.seed = n, batch_size, epochs, seed

    def __len__(self) -> int:
        return self.epochs

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            batches = list(torch.randperm(self.n, generator=gen).split(self.batch_size))
            if len(batches) > 1 and len(batches[-1]) == 1:
                batches[-2:] = [torch.cat(batches[-2:])]
            yield batches

    def __getitem__(self, epoch: int) -> list[torch.Tensor]:
        """Epoch ``epoch``'s batches (drawn again through the epochs before it)."""
        if not -self.epochs <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch} of {self.epochs}")
        return next(itertools.islice(self, epoch % self.epochs, None))


def steps_per_epoch(batch_size: int, n: int = N_TRAIN) -> int:
    """The optimiser steps of one epoch of ``n`` training inputs in batches of ``batch_size`` (``BatchOrder``'s)."""
    return len(BatchOrder(n, batch_size, 1, 0)[0])


@dataclass(frozen=True)
class Scaling:
    """The affine maps a variant applies to the data: identity, or standardisation by training-set stats."""

    x_mean: float = 0.0
    x_std: float = 1.0
    y_mean: float = 0.0
    y_std: float = 1.0

    @classmethod
    def for_variant(cls, variant: Variant, data: Dataset) -> Scaling:
        x, y = data.x_train.double(), data.y_train.double()
        return cls(
            *((x.mean().item(), x.std().item()) if variant.standardize_x else (0.0, 1.0)),
            y.mean().item() if variant.standardize_y or variant.center_y else 0.0,
            y.std().item() if variant.standardize_y or variant.scale_y else 1.0,
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


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) of the torch.distributed group this process trains in; (0, 1) alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_optimizer(name: str, net: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam (the experiments' default), or plain SGD: no momentum, the step is exactly -lr·gradient."""
    if name == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr, foreach=True)
    return torch.optim.Adam(net.parameters(), lr=lr, fused=True)  # one kernel per step, not ~10 per tensor


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # loss to differentiate, loss to record, x, y


def fit(net: nn.Module, opt: torch.optim.Optimizer, order: Iterable[list[torch.Tensor]],
        batch_loss: Callable[[torch.Tensor], Batch], probes: Sequence[Probe] = (),
        after_epoch: Callable[[int], None] | None = None) -> list[torch.Tensor]:  # fmt: skip
    """The training loop (``probe.loop``) of one net: for each epoch's batches (index tensors),
    ``batch_loss(idx)`` gives the loss to differentiate, the batch's loss to record, and the batch (x, y);
    backward, the probes that want this step (``probe.Probe``), the optimiser's step. After each epoch
    ``after_epoch(epoch)`` (1 for the first), then the probes'. Returns each step's recorded loss
    (tensors: no host sync)."""

    def prepare(idx: torch.Tensor):
        loss, recorded, x, y = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return x, y, opt, opt.step, recorded.detach()

    return loop(order, prepare, probes, after_epoch, before_epoch=net.train)


def fit_members(net: ConvNet, opt: torch.optim.Optimizer, x_train: torch.Tensor, y_train: torch.Tensor,
                batch_size: int, epochs: int, lr: Callable[[int], float] | None = None, probes: Sequence[Probe] = (),
                after_epoch: Callable[[int], None] | None = None) -> list[torch.Tensor]:  # fmt: skip
    """``fit`` for a ``ConvNet`` of K members side by side (one seed each): each step member k trains on
    its own batch, drawn by the ``BatchOrder`` of its seed (the members share no parameter, so the sum of
    their losses gives each its own gradient). ``lr(t)``: the rate of step t (from 0), set before it;
    None: the optimiser's own. Returns each step's losses, (K,) per step."""
    orders = [BatchOrder(len(x_train), batch_size, epochs, s) for s in net.seeds]
    per_epoch = ([torch.stack(b) for b in zip(*epoch, strict=True)] for epoch in zip(*orders, strict=True))
    counter = itertools.count()

    def batch_loss(idx: torch.Tensor):  # idx (K, B): each member's batch
        t = next(counter)
        for group in opt.param_groups if lr is not None else ():
            group["lr"] = lr(t)
        x, y = x_train[idx].transpose(0, 1), y_train[idx].T  # (B, K, C, H, W), (B, K)
        losses = ConvNet.member_losses(net(x), y)  # (K,)
        return losses.sum(), losses, x, y

    return fit(net, opt, per_epoch, batch_loss, probes, after_epoch)


def cosine(lr: float, steps: int) -> Callable[[int], float]:
    """The cosine schedule from ``lr`` at step 0 towards 0 at step ``steps``."""
    return lambda t: lr * (1 + math.cos(math.pi * t / steps)) / 2


@torch.no_grad()
def member_accuracy(net: ConvNet, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Each member's accuracy on (x, y), the same inputs for all: in eval mode, or with ``batch_size`` in
    training mode in batches of that size (the last takes what is left), on a copy of ``net`` so that
    its running estimates stay as they are. (K,)"""
    model = copy.deepcopy(net).train() if batch_size else net.eval()
    chunks = x.split(batch_size or len(x))
    logits = torch.cat([model(c.unsqueeze(1).expand(-1, net.k, *c.shape[1:])) for c in chunks])  # (N, K, 10)
    net.train()
    return (logits.argmax(-1) == y.unsqueeze(1)).double().mean(0)


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
    scaling = Scaling.for_variant(VARIANTS[net.model], data)
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


def noise_std_of(config: Config, r: float) -> float | None:
    """The noise std for range R: --noise-scaled, else --noise-std, else the data's default (None)."""
    if config.noise_scaled is not None:
        return spread_noise_std(r, config.noise_scaled, config.a)
    return config.noise_std


def dataset_for(config: Config, r: float, seed: int) -> Dataset:
    return make_dataset(r, seed, a=config.a, b=config.b, noise_std=noise_std_of(config, r), dtype=DTYPES[config.dtype])


def train_run(config: Config, job: tuple[float, str, int], probe: Callable[..., Probe] | None = None) -> dict:
    """One (range, model, seed), from nothing but the config: a worker process can run it alone.

    The run carries the ``Diagnostics`` probe unless ``config.diagnostics`` is off, and the probe
    ``probe(net, data, config)`` makes, if given.
    """
    r, model, seed = job
    data = dataset_for(config, r, seed)
    order = BatchOrder(len(data.x_train), config.batch_size, config.epochs, seed)
    net = TanhMLP(model, seed, bn_momentum=config.bn_momentum, dtype=DTYPES[config.dtype],
                  mybn_backend=config.mybn_backend)  # fmt: skip
    net = net.to(resolve_device(config.device))
    probes = [Diagnostics(net)] if config.diagnostics else []
    probes += [probe(net, data, config)] if probe else []
    result = train_one(net, data, order, config.lr, config.optimizer, probes)
    return {"range": [-r, r], "model": model, "seed": seed, **result}


def leave_stopping_to_the_parent() -> None:
    """In a child process: Ctrl-C, which reaches the whole process group, is the parent's to handle, and
    SIGTERM from the parent ends the child at once (not through the parent's handler, which it inherits)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """SIGINT and SIGTERM (Ctrl-C, ``kill``, ``timeout``, a job scheduler) stop this process through
    KeyboardInterrupt, so that its child processes are ended, its temporary files removed, and
    nothing half done is saved. SIGINT too, since a shell starts a background job with SIGINT ignored."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_init(threads: int) -> None:
    leave_stopping_to_the_parent()
    torch.set_num_threads(threads)


@contextlib.contextmanager
def process_pool(workers: int, threads: int = 1):
    """``map`` over ``workers`` processes forked from this one, each with ``threads`` threads, which
    leave stopping to this process: stopped (KeyboardInterrupt), or with a worker dead, the others
    are ended at once, not after their jobs."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_init,
                               initargs=(threads,))  # fmt: skip
    try:
        yield pool.map
    except BaseException:
        for process in list((pool._processes or {}).values()):  # no public way before Python 3.14
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


@contextlib.contextmanager
def run_pool(config: Config, jobs: int):
    """``map`` over worker processes, one per core, each with ``config.threads`` threads.

    Every run is deterministic on its own, so which process trains it changes nothing in the
    results. Workers are forked from this process (only on the CPU, where that is safe), after the
    modules every run needs are imported once here. The ``jobs`` runs count towards the experiment's
    progress, each as the map yields it.
    """
    progress.current().expect(jobs)  # each result the map yields is a run ended
    workers = min(config.workers or len(os.sched_getaffinity(0)), jobs)
    distributed = process_rank()[1] > 1  # the processes of a group already share the cores
    if (
        workers <= 1
        or distributed
        or resolve_device(config.device).type != "cpu"
        or "fork" not in mp.get_all_start_methods()
    ):
        yield progress.counted(map)
        return
    import torch._dynamo  # noqa: F401  - the optimiser imports it on first use; once here, not in every worker

    with process_pool(workers, config.threads) as pool_map:
        yield progress.counted(pool_map)


def run_experiment(
    config: Config, log: Callable[[str], None] = print, probe: Callable[..., Probe] | None = None
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


def dataset_entry(config: Config, r: float, seed: int) -> dict:
    """What a results file keeps of a dataset: its range, seed, noise and test set."""
    d = dataset_for(config, r, seed)
    return {"range": [-r, r], "seed": seed, "noise_std": d.noise_std,
            "x_test": d.x_test.squeeze(1).tolist(), "y_test": d.y_test.squeeze(1).tolist()}  # fmt: skip


def environment(config: Config) -> dict:
    """Where results were produced: versions (of this package too), device, the CPU numerics (``numerics.describe``:
    the policy that decides the rounding, and under the native policy the CPU whose kernels did), threads and
    processes."""
    return {
        "my_bn": my_bn.__version__,  # the package's version (pyproject.toml, CITATION.cff)
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(resolve_device(config.device)),
        "numerics": numerics.describe(),
        "threads": config.threads,
        "processes": process_rank()[1],
    }
