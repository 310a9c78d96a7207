"""Train the plain, nn.BatchNorm1d and MyBN nets on y = a·x² + b + noise; write results.json.

python train.py            # the main experiment: ranges 1 and 5, 3 nets, 5 seeds -> results/
python train.py float64    # the batch-norm nets again, in float64 -> results/float64/
python train.py controls   # the plain net on (-5, 5) with one thing changed -> results/controls/
python train.py sweep      # R = 0.5 ... 10 at one signal-to-noise ratio -> results/sweep/
python train.py ddp        # float64 batch-norm nets over two processes -> results/ddp/
python train.py all        # all five, as the README's main command runs them
python train.py --ranges 3 --seeds 0 1 --epochs 20 --out results/r3

An experiment name picks a preset (each experiment is a module of experiments/); flags given beside
it override the preset's values (the defaults shown below are the main experiment's). Results go to
OUT/results.json for the main experiment and to OUT/NAME/results.json for the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bn_pytorch import VARIANTS
from config import DTYPES, Config, build_parser, resolve_device
from data import N_TRAIN, overflow_problem
from experiments import EXPERIMENTS
from results import format_table, save_results, summarize, unwritable
from training import BatchOrder, noise_std_of, process_rank, run_experiment


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
    configs = {name: Config(**{**EXPERIMENTS[name].PRESET, **args}) for name in experiments}
    config = configs[experiments[0]]
    try:
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
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


# ----------------------------------------------------------------------------------------------
# Running an experiment, in this process or in a group of them


def run_and_save(experiment: str, config: Config) -> None:
    """Run one experiment in this process (one of a group, or alone); the first process reports and saves."""
    torch.set_num_threads(config.threads)
    first = process_rank()[0] == 0
    if first:
        print(f"== {experiment}")
    run = getattr(EXPERIMENTS[experiment], "run", run_experiment)  # an experiment may train in its own way
    results = {"experiment": experiment, **run(config, log=print if first else lambda _: None)}
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
