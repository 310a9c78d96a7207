"""Train the plain, nn.BatchNorm1d and MyBN nets on y = a·x² + b + noise; write results.json.

python train.py            # the main experiment: ranges 1 and 5, 3 nets, 5 seeds -> results/
python train.py float64    # the batch-norm nets again, in float64 -> results/float64/
python train.py controls   # the plain net on (-5, 5) with one thing changed -> results/controls/
python train.py sweep      # R = 0.5 ... 10 at one signal-to-noise ratio -> results/sweep/
python train.py ddp        # float64 batch-norm nets over two processes -> results/ddp/
python train.py ics        # internal covariate shift, two readings -> results/ics/
python train.py noisy      # batch norm with non-stationary noise -> results/noisy/
python train.py running_stats  # moving averages against precise statistics -> results/running_stats/
python train.py lr         # learning-rate grid, Adam and SGD, 10 and 100 epochs -> results/lr/
python train.py landscape  # loss and gradient along the gradient, plain SGD -> results/landscape/
python train.py mnist      # Figure 1 of the batch-norm paper, on real MNIST digits -> results/mnist/
python train.py all        # every one, as the README's main command runs them
python train.py --ranges 3 --seeds 0 1 --epochs 20 --out results/r3

An experiment name picks a preset (each experiment is a module of experiments/); flags given beside
it override the preset's values (the defaults shown below are the main experiment's), and a flag it
does not read is refused (with `all`, left aside where unread, with a note). Results go to
OUT/results.json for the main experiment and to OUT/NAME/results.json for the others, recording
what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from pathlib import Path

import torch
import torch.distributed as dist

import my_bn_cpp
from bn_pytorch import VARIANTS
from config import DTYPES, Config, build_parser, resolve_device
from data import N_TRAIN, overflow_problem
from experiments import EXPERIMENTS
from results import format_table, from_json, save_results, summarize, to_json, unwritable
from training import (
    BatchOrder,
    leave_stopping_to_the_parent,
    noise_std_of,
    process_rank,
    run_experiment,
    stop_signals_as_interrupt,
)


def results_dir(config: Config, experiment: str) -> Path:
    return Path(config.out) if experiment == "main" else Path(config.out) / experiment


def make_parser() -> argparse.ArgumentParser:
    """train.py's command line: an optional experiment name, then the Config flags."""
    parser = build_parser(Config, __doc__, suppress_defaults=True)
    parser.add_argument(
        "experiment", nargs="?", default="main", choices=[*EXPERIMENTS, "all"], help="which preset (default: main)"
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
    experiments = list(EXPERIMENTS) if experiment == "all" else [experiment]
    try:
        resolve_device(args.get("device", "auto"))
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
    for name in experiments:  # a flag the experiment does not read: refused, or with `all` left aside there
        problem = unused_flag(name, args)
        if problem and experiment != "all":
            parser.error(problem)
        if problem:
            print(f"note: {problem.removeprefix('argument ')}; `all` leaves it aside there, and the {name} results "
                  "record what ran", file=sys.stderr)  # fmt: skip
    configs = {name: Config(**{**EXPERIMENTS[name].PRESET, **args, **fixed_values(name)}) for name in experiments}
    for name, c in configs.items():
        problem = getattr(EXPERIMENTS[name], "config_problem", lambda _: None)(c)
        if problem:
            parser.error(problem)
    config = configs[experiments[0]]
    for c in (c for c in configs.values() if c.nproc > 1):
        smallest = min(len(b) for b in BatchOrder(N_TRAIN, c.batch_size, 1, 0)[0]) // c.nproc
        local_bn = [m for m in c.models if VARIANTS[m].norm is not None and not VARIANTS[m].sync]
        if smallest < (2 if local_bn else 1):
            why = f"the per-process batch norm of {local_bn[0]}" if local_bn else "a process to train on"
            parser.error(
                f"argument --nproc: with --batch-size {c.batch_size}, a batch split over {c.nproc} processes leaves "
                f"{smallest} sample(s) to some process, too few for {why}"
            )
    for c in configs.values():
        for r in c.ranges:
            problem = overflow_problem(r, c.a, c.b, noise_std_of(c, r), DTYPES[c.dtype])
            if problem:
                parser.error(f"arguments --ranges/--a/--b/--noise-std/--dtype: {problem}")
    problem = unwritable(Path(config.out))
    if problem:
        parser.error(f"argument --out: cannot write results to {config.out!r}: {problem}")
    return configs


def fixed_values(experiment: str) -> dict:
    """The settings ``experiment`` runs with whatever the flags say (its ``FIXED``), by name."""
    return {name: value for name, (value, _why) in getattr(EXPERIMENTS[experiment], "FIXED", {}).items()}


def unused_flag(experiment: str, given: dict) -> str | None:
    """The error for the flags in ``given`` that ``experiment`` does not read: its ``UNUSED`` settings,
    and its ``FIXED`` ones with another value than the one it runs with."""
    module, problems = EXPERIMENTS[experiment], []
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if name in getattr(module, "UNUSED", {}):
            problems.append(f"{flag}: the {experiment} experiment does not use it ({module.UNUSED[name]})")
        fixed, why = getattr(module, "FIXED", {}).get(name, (value, ""))
        if value != fixed and not (name == "device" and resolve_device(value) == resolve_device(fixed)):
            problems.append(f"{flag}: the {experiment} experiment runs with {fixed} only ({why})")
    return f"argument {'; '.join(problems)}" if problems else None


# ----------------------------------------------------------------------------------------------
# Running an experiment, in this process or in a group of them


def run_here(experiment: str, config: Config) -> dict:
    """Run one experiment in this process (alone, or as one of a group); the first process logs. The
    results' config holds the settings the experiment read, not those it does not use."""
    torch.set_num_threads(config.threads)
    module = EXPERIMENTS[experiment]
    run = getattr(module, "run", run_experiment)  # an experiment may train in its own way
    log = print if process_rank()[0] == 0 else lambda _: None
    results = {"experiment": experiment, **run(config, log=log)}
    results["config"] = {k: v for k, v in results["config"].items() if k not in getattr(module, "UNUSED", {})}
    return results


def available_backend(configs: dict[str, Config]) -> tuple[dict[str, Config], str | None]:
    """``configs`` with the MyBN backend that will really run, and a note for the results where that
    is not the one asked for (``--mybn-backend cpp`` where the C++ backend cannot be built)."""
    if not any(c.mybn_backend == "cpp" for c in configs.values()) or my_bn_cpp.available():
        return configs, None
    note = (f"--mybn-backend cpp: the C++ backend was not available ({my_bn_cpp.unavailable_because()}); MyBN ran "
            "its Python backend")  # fmt: skip
    return {name: dataclasses.replace(c, mybn_backend="python") for name, c in configs.items()}, note


def save(experiment: str, config: Config, results: dict, fallback: str | None = None) -> Path:
    if fallback:
        results["environment"]["fallback"] = fallback
    path = save_results(results, results_dir(config, experiment))
    summary = getattr(EXPERIMENTS[experiment], "summary_table", lambda r: format_table(summarize(r)))
    print(summary(results))
    print(f"wrote {path}")
    return path


class GroupFailed(Exception):
    """A process of a ``--nproc`` group ended before the experiment did."""


def _group_process(rank: int, experiment: str, config: Config, port: int, handover: str) -> None:
    """One of the ``config.nproc`` processes started by ``run_distributed``; the first leaves the
    results in ``handover`` for the parent, which saves them once every process has finished."""
    leave_stopping_to_the_parent()
    device = resolve_device(config.device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device.type == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        config = dataclasses.replace(config, device=f"cuda:{rank % torch.cuda.device_count()}")
    backend = "nccl" if device.type == "cuda" else "gloo"
    # a bounded wait: a process that cannot join its group fails in minutes, not in the default half hour
    dist.init_process_group(backend, rank=rank, world_size=config.nproc, timeout=datetime.timedelta(minutes=5))
    try:
        results = run_here(experiment, config)
        if rank == 0:
            Path(handover).write_text(to_json(results))
        dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
    finally:
        dist.destroy_process_group()


def wait_for_group(group: list, experiment: str) -> None:
    """Return when every process of ``group`` has ended; raise ``GroupFailed`` as soon as one fails."""
    while live := [p.sentinel for p in group if p.exitcode is None]:
        # one list, read once: reading exitcode again could find the last process just gone and hand
        # wait() an empty list, which blocks forever (what hung train.py now and then)
        wait(live)
        failed = [(rank, p.exitcode) for rank, p in enumerate(group) if p.exitcode not in (None, 0)]
        if failed:  # the first killed by a signal, if any: the others failed because it went
            rank, code = min(failed, key=lambda f: f[1] > 0)
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"failed (exit {code})"
            raise GroupFailed(f"process {rank} of the {experiment} group {how}")


def run_distributed(experiment: str, config: Config) -> dict:
    """Run the experiment in ``config.nproc`` processes on this machine, one group; return its results.

    Stopped here (SIGINT, SIGTERM) or by the death of one of them, the group is ended at once, and
    nothing of it is saved: only this process saves, after every process of the group has finished.
    """
    with socket.socket() as s:  # a free port on the loopback interface for the group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn" if resolve_device(config.device).type == "cuda" else "fork")
    with tempfile.TemporaryDirectory(prefix="train-group-") as tmp:
        handover = Path(tmp) / "results.json"
        group = [ctx.Process(target=_group_process, args=(rank, experiment, config, port, str(handover)))
                 for rank in range(config.nproc)]  # fmt: skip
        try:
            for process in group:
                process.start()
            wait_for_group(group, experiment)
        except BaseException:
            for process in group:
                if process.is_alive():
                    process.terminate()
            for process in group:
                process.join(timeout=10)
                if process.is_alive():  # it did not end on SIGTERM
                    process.kill()
                    process.join()
            raise
        return from_json(handover.read_text())


def main(argv: list[str] | None = None) -> int:
    configs = parse_config(argv)
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this process is one of the group already
        configs, fallback = available_backend(configs)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            for experiment, config in configs.items():
                config = dataclasses.replace(config, nproc=dist.get_world_size())
                if process_rank()[0] == 0:
                    print(f"== {experiment}")
                results = run_here(experiment, config)
                if process_rank()[0] == 0:
                    save(experiment, config, results, fallback)
            dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
        finally:
            dist.destroy_process_group()
        return 0
    written = []
    try:
        with stop_signals_as_interrupt():
            configs, fallback = available_backend(configs)  # built (or found wanting) before any worker forks
            if fallback:
                print(f"train.py: {fallback}; the results say so", file=sys.stderr)
            for experiment, config in configs.items():
                print(f"== {experiment}", flush=True)  # flushed before any fork, or a child would print it again
                results = run_distributed(experiment, config) if config.nproc > 1 else run_here(experiment, config)
                written.append(save(experiment, config, results, fallback))
    except (KeyboardInterrupt, GroupFailed, BrokenProcessPool, OSError) as exc:
        if isinstance(exc, KeyboardInterrupt):
            why = f"stopped by {exc.args[0] if exc.args else 'SIGINT'}"
        elif isinstance(exc, OSError):  # a full disk, say: the atomic writes leave the file they were writing as it was
            why = f"cannot write {exc.filename or 'the results'} ({exc.strerror or exc})"
        else:
            why = "a worker process died" if isinstance(exc, BrokenProcessPool) else str(exc)
        before = f"wrote {', '.join(map(str, written))} before that, " if written else ""
        sys.exit(f"{why}: {before}nothing else written; earlier results are as they were")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing written, earlier results are as they were")
