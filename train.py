"""Train the plain, nn.BatchNorm1d and MyBN nets on y = a·x² + b + noise; write results.json.

python train.py            # the main experiment: ranges 1 and 5, 3 nets, 5 seeds -> results/
python train.py float64    # the batch-norm nets again, in float64 -> results/float64/
python train.py controls   # the plain net on (-5, 5) with one thing changed -> results/controls/
python train.py sweep      # R = 0.5 ... 10 at one signal-to-noise ratio -> results/sweep/
python train.py all        # all four, as the README's main command runs them
python train.py --ranges 3 --seeds 0 1 --epochs 20 --out results/r3

An experiment name picks a preset; flags given beside it override the preset's values (the defaults
shown below are the main experiment's). Results go to OUT/results.json for the main experiment and
to OUT/NAME/results.json for the others.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing as mp
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bn_pytorch import CONTROLS, MODELS, VARIANTS, TanhMLP, Variant
from data import N_TRAIN, Dataset, make_dataset, spread_noise_std

RESULTS_FILE = "results.json"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------------------------------------
# Flag values: each check raises ArgumentTypeError, which argparse reports naming the flag.


def _number(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_float = _number(float, lambda v: v > 0, "a positive number")
finite_float = _number(float, lambda v: True, "a number")
non_negative_float = _number(float, lambda v: v >= 0, "a non-negative number")
unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
positive_int = _number(int, lambda v: v >= 1, "a positive integer")
seed_int = non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
batch_int = _number(int, lambda v: v >= 2, "an integer >= 2 (batch norm needs two samples)")


def flag(default, help: str, **argparse_kwargs):
    """A Config field that carries its own argparse settings."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **argparse_kwargs})
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class Config:
    """Every setting of a run: the single source of the defaults and of train.py's flags."""

    ranges: list[float] = flag([1.0, 5.0], "each R trains on inputs in (-R, R)", type=positive_float, metavar="R")
    models: list[str] = flag(
        list(MODELS), f"nets to train, any of: {' '.join(VARIANTS)}", choices=tuple(VARIANTS), metavar="MODEL"
    )
    seeds: list[int] = flag(
        [0, 1, 2, 3, 4], "seeds: data noise, initial weights, batch order", type=seed_int, metavar="SEED"
    )
    epochs: int = flag(10, "training epochs", type=positive_int)
    batch_size: int = flag(64, "mini-batch size", type=batch_int)
    lr: float = flag(0.02, "Adam learning rate", type=positive_float)
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
    dtype: str = flag("float32", "floating-point type of data and nets", choices=tuple(DTYPES))
    device: str = flag("auto", "cpu, cuda, cuda:N, or auto (CUDA when present)")
    threads: int = flag(
        1, "intra-op CPU threads per process; fixed so that reruns are bit-identical", type=positive_int
    )
    workers: int = flag(0, "processes training runs side by side on the CPU; 0: one per core", type=non_negative_int)
    nproc: int = flag(
        1,
        "processes per training run, each taking its slice of every batch (DistributedDataParallel over gloo; "
        "nccl on CUDA); under torchrun, its process count",
        type=positive_int,
    )
    out: str = flag("results", f"output directory: OUT/{RESULTS_FILE}, or OUT/NAME/{RESULTS_FILE} for experiment NAME")


PRESETS: dict[str, dict] = {  # experiment name -> the Config values it changes
    "main": {},
    "float64": {"dtype": "float64", "models": ["torch_bn", "my_bn"], "diagnostics": False},
    "controls": {"ranges": [5.0], "models": [*MODELS, *CONTROLS]},
    "sweep": {"ranges": [0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0], "noise_scaled": 0.1, "diagnostics": False},
    "ddp": {"nproc": 2, "dtype": "float64", "models": ["torch_bn", "my_bn", "my_bn_local"], "diagnostics": False},
}


def results_dir(config: Config, experiment: str) -> Path:
    return Path(config.out) if experiment == "main" else Path(config.out) / experiment


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the flag, exit status 2: no usage dump above it."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(
    config_cls: type, description: str | None, *, suppress_defaults: bool = False
) -> argparse.ArgumentParser:
    """argparse flags generated from a config dataclass: --batch-size for batch_size, and so on.

    With ``suppress_defaults`` only the flags actually given appear in the parsed namespace.
    """
    parser = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(config_cls):
        meta = dict(f.metadata)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        kwargs = {"help": f"{meta.pop('help')} (default: {shown})", "default": default, **meta}
        if isinstance(default, list):
            kwargs["nargs"] = "+"
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def make_parser() -> argparse.ArgumentParser:
    """train.py's command line: an optional experiment name, then the Config flags."""
    parser = build_parser(Config, __doc__, suppress_defaults=True)
    parser.add_argument(
        "experiment", nargs="?", default="main", choices=[*PRESETS, "all"], help="which preset (default: main)"
    )
    return parser


def parse_config(argv: list[str] | None = None) -> dict[str, Config]:
    """Parse and check the command line; any bad value exits with status 2 and one line.

    Returns the experiments to run, each with its config: the preset with the given flags on top.
    """
    parser = make_parser()
    args = vars(parser.parse_args(argv))
    experiment = args.pop("experiment")
    for name in ("ranges", "models", "seeds"):
        if name in args:
            args[name] = list(dict.fromkeys(args[name]))  # drop repeats, keep order
    experiments = list(PRESETS) if experiment == "all" else [experiment]
    configs = {name: Config(**{**PRESETS[name], **args}) for name in experiments}
    config = configs[experiments[0]]
    try:
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
    for c in (c for c in configs.values() if c.nproc > 1):
        smallest = min(len(b) for b in batch_order(N_TRAIN, c.batch_size, 1, 0)[0]) // c.nproc
        local_bn = [m for m in c.models if VARIANTS[m].norm is not None and not VARIANTS[m].sync]
        if local_bn and smallest < 2:
            parser.error(
                f"argument --nproc: with --batch-size {c.batch_size}, a batch split over {c.nproc} processes leaves "
                f"{smallest} sample(s) to some process, too few for the per-process batch norm of {local_bn[0]}"
            )
    problem = _unwritable(Path(config.out))
    if problem:
        parser.error(f"argument --out: cannot write results to {config.out!r}: {problem}")
    return configs


def _unwritable(out: Path) -> str | None:
    """Why results could not be written under ``out``, or None if they can."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU; any other name must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"expected cpu, cuda, cuda:N or auto, got {name!r}")
    return device


# ----------------------------------------------------------------------------------------------
# Training


def batch_order(n: int, batch_size: int, epochs: int, seed: int) -> list[list[torch.Tensor]]:
    """Index batches for every epoch, reshuffled each epoch, shared by all nets of one seed.

    A final batch of a single sample is merged into the one before it: batch norm cannot take
    statistics over one value per channel.
    """
    gen = torch.Generator().manual_seed(seed)
    epochs_batches = []
    for _ in range(epochs):
        batches = list(torch.randperm(n, generator=gen).split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        epochs_batches.append(batches)
    return epochs_batches


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
            *((y.mean().item(), y.std().item()) if variant.standardize_y else (0.0, 1.0)),
        )

    def x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_mean) / self.y_std

    def y_back(self, y_scaled: torch.Tensor) -> torch.Tensor:
        return y_scaled * self.y_std + self.y_mean


SATURATED = 0.99  # a tanh unit is saturated when |tanh(z)| > 0.99, i.e. |z| > 2.65
QUANTILES = (0.15, 0.50, 0.85)  # as in Figure 1 of Ioffe & Szegedy (2015)
UNIT = 0  # the unit whose tanh input is followed on its own


class Diagnostics:
    """Per hidden block, at chosen steps: what goes into each tanh, how much of it saturates, and how
    large the gradient of the block's Linear weight is.

    Forward hooks only read the tanh inputs of the training batch; nothing here touches the
    parameters, the gradients or any random generator, so training is the same with or without it.
    """

    def __init__(self, net: TanhMLP):
        self.net = net
        self.latest: list[torch.Tensor | None] = [None] * len(net.blocks)
        self.handles = [
            block.act.register_forward_hook(lambda _m, inputs, _out, i=i: self._keep(i, inputs[0]))
            for i, block in enumerate(net.blocks)
        ]
        self.records: dict[str, list] = {"step": [], "saturation": [], "grad_norm": [], "layer_q": [], "unit_q": []}

    def _keep(self, i: int, z: torch.Tensor) -> None:
        if self.net.training:
            self.latest[i] = z.detach()

    @torch.no_grad()
    def record(self, step: int) -> None:
        """Call after backward and before the optimiser step: grads and tanh inputs are this step's."""
        z = torch.stack(self.latest).float()  # (blocks, batch, units)
        q = torch.tensor(QUANTILES, device=z.device)
        self.records["step"].append(step)
        self.records["saturation"].append((z.tanh().abs() > SATURATED).float().mean((1, 2)))
        self.records["grad_norm"].append(torch.stack([b.linear.weight.grad.norm() for b in self.net.blocks]).float())
        self.records["layer_q"].append(torch.quantile(z.flatten(1), q, dim=1).T)  # (blocks, 3)
        self.records["unit_q"].append(torch.quantile(z[:, :, UNIT], q, dim=1).T)  # (blocks, 3)

    def results(self) -> dict:
        for handle in self.handles:
            handle.remove()
        out = {"step": self.records["step"], "quantiles": list(QUANTILES), "unit": UNIT}
        for key in ("saturation", "grad_norm", "layer_q", "unit_q"):
            out[key] = _rounded(torch.stack(self.records[key]).tolist()) if self.records[key] else []
        return out


def _rounded(values, digits: int = 6):
    """Nested lists of floats to ``digits`` significant digits: plenty for figures, a third of the JSON."""
    if isinstance(values, list):
        return [_rounded(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


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


def train_one(
    net: TanhMLP, data: Dataset, order: list[list[torch.Tensor]], lr: float, diagnostics: bool = True
) -> dict:
    """Adam on MSE over the given batches; test MSE before training and after every epoch.

    Diagnostics are recorded at every step of the first epoch and at the last step of each later one.
    In a torch.distributed group each process trains on its slice of every batch (the tanh inputs
    in the diagnostics are then this process's share), and evaluates the same net on its own.
    """
    device = next(net.parameters()).device
    scaling = Scaling.for_variant(VARIANTS[net.model], data)
    x_train, y_train = scaling.x(data.x_train.to(device)), scaling.y(data.y_train.to(device))
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    rank, world = process_rank()
    model = net if world == 1 else DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)  # one kernel per step, not ~10 per tensor
    diag = Diagnostics(net) if diagnostics else None
    test_mse = [evaluate(net, x_test, y_test, scaling)[0]]
    train_loss = []
    for epoch, batches in enumerate(order):
        net.train()
        for i, idx in enumerate(batches):
            idx = idx.to(device)
            if world == 1:
                loss = batch_loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
            else:  # this process's slice of the batch; DDP averages the gradients over the processes
                share = idx.tensor_split(world)[rank]
                squares = (model(x_train[share]) - y_train[share]).square().sum()
                loss = squares * (world / len(idx))  # so that the average is the whole batch's mean loss
                batch_loss = squares.detach().clone()
                dist.all_reduce(batch_loss)
                batch_loss /= len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if diag and (epoch == 0 or i == len(batches) - 1):
                diag.record(len(train_loss) + 1)
            opt.step()
            train_loss.append(batch_loss.detach())  # no .item(): no host sync per step
        test_mse.append(evaluate(net, x_test, y_test, scaling)[0])
    pred = evaluate(net, x_test, y_test, scaling)[1]
    return {
        "test_mse": torch.stack(test_mse).tolist(),
        "train_loss": (torch.stack(train_loss) * scaling.y_std**2).tolist(),  # in the units of y²
        "predictions": pred.squeeze(1).tolist(),
        **({"diagnostics": diag.results()} if diag else {}),
    }


def noise_std_of(config: Config, r: float) -> float | None:
    """The noise std for range R: --noise-scaled, else --noise-std, else the data's default (None)."""
    if config.noise_scaled is not None:
        return spread_noise_std(r, config.noise_scaled, config.a)
    return config.noise_std


def dataset_for(config: Config, r: float, seed: int) -> Dataset:
    return make_dataset(r, seed, a=config.a, b=config.b, noise_std=noise_std_of(config, r), dtype=DTYPES[config.dtype])


def train_run(config: Config, job: tuple[float, str, int]) -> dict:
    """One (range, model, seed), from nothing but the config: a worker process can run it alone."""
    r, model, seed = job
    data = dataset_for(config, r, seed)
    order = batch_order(len(data.x_train), config.batch_size, config.epochs, seed)
    net = TanhMLP(model, seed, bn_momentum=config.bn_momentum, dtype=DTYPES[config.dtype])
    result = train_one(net.to(resolve_device(config.device)), data, order, config.lr, config.diagnostics)
    return {"range": [-r, r], "model": model, "seed": seed, **result}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


@contextlib.contextmanager
def run_pool(config: Config, jobs: int):
    """``map`` over worker processes, one per core, each with ``config.threads`` threads.

    Every run is deterministic on its own, so which process trains it changes nothing in the
    results. Workers are forked from this process (only on the CPU, where that is safe), after the
    modules every run needs are imported once here.
    """
    workers = min(config.workers or len(os.sched_getaffinity(0)), jobs)
    distributed = process_rank()[1] > 1  # the processes of a group already share the cores
    if (
        workers <= 1
        or distributed
        or resolve_device(config.device).type != "cpu"
        or "fork" not in mp.get_all_start_methods()
    ):
        yield map
        return
    import torch._dynamo  # noqa: F401  - the optimiser imports it on first use; once here, not in every worker

    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(config.threads,)) as pool:
        yield pool.map


def run_experiment(config: Config, log: Callable[[str], None] = print) -> dict:
    """Train every (range, model, seed) of ``config``; return the results as a JSON-able dict."""
    start = time.perf_counter()
    datasets = []
    for r in config.ranges:
        for s in config.seeds:
            d = dataset_for(config, r, s)
            datasets.append({
                "range": [-r, r], "seed": s, "noise_std": d.noise_std,
                "x_test": d.x_test.squeeze(1).tolist(), "y_test": d.y_test.squeeze(1).tolist(),
            })  # fmt: skip
    jobs = [(r, model, s) for r in config.ranges for model in config.models for s in config.seeds]
    runs = []
    with run_pool(config, len(jobs)) as pool_map:
        for run in pool_map(functools.partial(train_run, config), jobs):
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
    return {
        "config": dataclasses.asdict(config),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(resolve_device(config.device)),
            "threads": config.threads,
            "processes": process_rank()[1],
        },
        "datasets": datasets,
        "runs": runs,
    }


# ----------------------------------------------------------------------------------------------
# Results on disk and their summary


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` into a temporary file beside it, then rename.

    An interruption leaves the old file as it was, never half of a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the mode of a normal new file
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(results: dict) -> str:
    """JSON with one line per top-level entry and per run or dataset: compact, yet diffable."""

    def entry(value) -> str:
        if isinstance(value, list):
            return "[\n" + ",\n".join(json.dumps(item, separators=(",", ":")) for item in value) + "\n]"
        return json.dumps(value)

    return "{\n" + ",\n".join(f"{json.dumps(key)}: {entry(value)}" for key, value in results.items()) + "\n}\n"


def save_results(results: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / RESULTS_FILE
    atomic_write(path, lambda tmp: tmp.write_text(to_json(results)))
    return path


def load_results(path: str | Path) -> dict:
    """Read a results.json; a clear ValueError if it is missing or not one."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no results at {path}: run `python train.py` first")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or not {"config", "runs", "datasets"} <= results.keys():
        raise ValueError(f"{path} is not a results file of train.py (no config/runs/datasets)")
    return results


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
        rows.append({"range": r, "model": model, "seeds": len(values), "mean": mean, "std": std,
                     "noise_floor": sum(floors[r]) / len(floors[r])})  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    """The summary as aligned text for the terminal."""
    lines = [f"{'range':<10} {'model':<12} {'seeds':>5}  {'final test MSE':>22}  {'noise floor':>11}"]
    for row in rows:
        rng = f"(-{row['range']:g}, {row['range']:g})"
        mse = f"{row['mean']:.4g} ± {row['std']:.2g}"
        lines.append(f"{rng:<10} {row['model']:<12} {row['seeds']:>5}  {mse:>22}  {row['noise_floor']:>11.4g}")
    return "\n".join(lines)


def run_and_save(experiment: str, config: Config) -> None:
    """Run one experiment in this process (one of a group, or alone); the first process reports and saves."""
    torch.set_num_threads(config.threads)
    first = process_rank()[0] == 0
    if first:
        print(f"== {experiment}")
    results = {"experiment": experiment, **run_experiment(config, log=print if first else lambda _: None)}
    if first:
        path = save_results(results, results_dir(config, experiment))
        print(format_table(summarize(results)))
        print(f"wrote {path}")


def _group_process(rank: int, experiment: str, config: Config, port: int) -> None:
    """One of the ``config.nproc`` processes started by ``run_distributed``."""
    device = resolve_device(config.device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device.type == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        config = dataclasses.replace(config, device=f"cuda:{rank % torch.cuda.device_count()}")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=config.nproc)
    try:
        run_and_save(experiment, config)
        dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
    finally:
        dist.destroy_process_group()


def run_distributed(experiment: str, config: Config) -> None:
    """Start ``config.nproc`` processes on this machine, one group, and run the experiment in them."""
    import torch.multiprocessing as tmp

    with socket.socket() as s:  # a free port on the loopback interface for the group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "spawn" if resolve_device(config.device).type == "cuda" else "fork"
    tmp.start_processes(_group_process, args=(experiment, config, port), nprocs=config.nproc, start_method=method)


def main(argv: list[str] | None = None) -> int:
    configs = parse_config(argv)
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this process is one of the group already
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            for experiment, config in configs.items():
                run_and_save(experiment, dataclasses.replace(config, nproc=dist.get_world_size()))
            dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
        finally:
            dist.destroy_process_group()
        return 0
    for experiment, config in configs.items():
        if config.nproc > 1:
            run_distributed(experiment, config)
        else:
            run_and_save(experiment, config)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing written, earlier results are as they were")
