"""Train the experiments' nets and write their results (results.json, one per experiment).

python train.py            # the main experiment: ranges 1 and 5, plain / nn.BatchNorm1d / MyBN, 5 seeds
python train.py NAME       # experiment NAME, its own preset (`train.py NAME --help` shows it)
python train.py all        # every one, as the README's main command runs them
python train.py --ranges 3 --seeds 0 1 --epochs 20   # your own configuration -> runs/

An experiment name picks a preset (each experiment is a module of experiments/); flags given beside
it override the preset's values (the defaults shown below are the main experiment's), and a flag it
does not read is refused (with `all`, left aside where unread, with a note). Results go to
OUT/results.json for the main experiment and to OUT/NAME/results.json for the others, recording
what ran. Only a run of an experiment's own preset goes to results/ (the committed record, drawn
into picture/ and the README); any other configuration goes to runs/ (ignored by git), which
compare.py draws into runs/picture/ and runs/tables.md. Progress goes to stderr: a bar in a
terminal, a line every few seconds elsewhere (--quiet: none).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
import textwrap
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from pathlib import Path

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout

from experiments import EXPERIMENTS
from lab import numerics, progress
from lab.results import from_json, inside, save_results, to_json, unwritable
from lab.settings import (
    COMMITTED,
    TRIALS,
    Settings,
    as_text,
    build_parser,
    check_values,
    resolve_device,
    same_setting,
)
from lab.workers import leave_stopping_to_the_parent, process_rank, stop_signals_as_interrupt
from my_bn import cpp as my_bn_cpp


def experiments_epilog() -> str:
    width = max(map(len, EXPERIMENTS))
    lines = [textwrap.fill(EXPERIMENTS[name].first_sentence(), 100, initial_indent=f"  {name:<{width}}  ",
                           subsequent_indent=" " * (width + 4)) for name in EXPERIMENTS]
    return ("experiments (`train.py NAME --help` shows one's settings, its own flags among them):\n"
            + "\n".join(lines))


def experiment_help(name: str) -> tuple[str, dict[str, str]]:
    """``train.py NAME --help``: the experiment's docstring, and each flag's value in its preset (or the
    one value it runs with)."""
    experiment = EXPERIMENTS[name]
    cls = experiment.settings
    head = (f"python train.py {name} [flags]: the {name} experiment (experiments/{name}.py).\n\n"
            f"{textwrap.dedent(experiment.doc).strip()}\n\n"
            f"Its settings ({cls.__name__}) are its own flags, below; their defaults are its preset. Flags given "
            f"override it; the results of any other configuration than the preset go to {TRIALS}/.")
    shown = {field: f"{name}: {as_text(value)}" for field, value in dataclasses.asdict(cls()).items()}
    for field, (value, why) in cls.ONLY.items():
        shown[field] = f"{name}: {as_text(value)} only, {why}"
    shown["out"] = f"{COMMITTED}/{'' if name == 'main' else name + '/'} for the preset, {TRIALS}/ otherwise"
    return head, shown


def make_parser(experiment: str | None = None) -> argparse.ArgumentParser:
    """train.py's command line: an optional experiment name, then the settings' flags. Named, an
    experiment's help shows its own settings; unnamed, the main experiment's, and the parser takes
    every experiment's flags (``all`` passes each to the experiments that read it)."""
    if experiment in EXPERIMENTS:
        description, shown = experiment_help(experiment)
        parser = build_parser(EXPERIMENTS[experiment].settings, description, suppress_defaults=True, shown=shown)
    else:
        shown = {"out": f"default: {COMMITTED}/ for an experiment's own preset, {TRIALS}/ for any other configuration"}
        others = tuple(e.settings for e in EXPERIMENTS.values())
        parser = build_parser(EXPERIMENTS["main"].settings, __doc__, suppress_defaults=True, shown=shown,
                              epilog=experiments_epilog(), also=others)
    parser.add_argument(
        "experiment", nargs="?", default="main", choices=[*EXPERIMENTS, "all"], help="which preset (default: main)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress and no line per run: the summary only")
    return parser


def parse_config(argv: list[str] | None = None) -> dict[str, Settings]:
    """The experiments to run, each with its settings, as ``parse_args`` reads them."""
    return parse_args(argv)[0]


def parse_args(argv: list[str] | None = None) -> tuple[dict[str, Settings], bool]:
    """Parse and check the command line; any bad value exits with status 2 and one line.

    Returns the experiments to run, each with its settings (its preset with the given flags on top),
    and whether to be quiet.
    """
    words = sys.argv[1:] if argv is None else argv
    named = next((w for w in words if w in EXPERIMENTS), None) if {"-h", "--help"} & set(words) else None
    parser = make_parser(named)  # the help of the experiment named, if any; else every experiment's flags
    args = vars(parser.parse_args(argv))
    experiment, quiet = args.pop("experiment"), args.pop("quiet")
    args = {k: list(dict.fromkeys(v)) if isinstance(v, list) else v for k, v in args.items()}  # no repeats, in order
    experiments = list(EXPERIMENTS) if experiment == "all" else [experiment]
    try:
        resolve_device(args.get("device", "auto"))
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")
    configs = {}
    for name in experiments:  # a flag the experiment does not read: refused, or with `all` left aside there
        cls, unread = EXPERIMENTS[name].settings, unused_flags(name, args)
        if unread and experiment != "all":
            parser.error(f"argument {'; '.join(unread.values())}")
        if unread:
            print(f"note: {'; '.join(unread.values())}; `all` leaves it aside there, and the {name} results "
                  "record what ran", file=sys.stderr)
        given = {k: v for k, v in args.items() if k not in unread}
        for setting, value in given.items():
            try:
                check_values(cls, {setting: value})
            except ValueError as exc:
                parser.error(f"argument --{setting.replace('_', '-')}: the {name} experiment's "
                             f"{str(exc).removeprefix('config: ')}")
        configs[name] = cls(**given)
        problem = configs[name].problem()
        if problem:
            parser.error(problem)
    configs = {name: dataclasses.replace(c, out=output_folder(parser, name, c)) for name, c in configs.items()}
    for out in dict.fromkeys(c.out for c in configs.values()):
        problem = unwritable(Path(out))
        if problem:
            parser.error(f"argument --out: cannot write results to {out!r}: {problem}")
    return configs, quiet


def output_folder(parser: argparse.ArgumentParser, name: str, config: Settings) -> str:
    """Where experiment ``name``'s results go: ``--out`` where given, else results/ for a run of its own
    preset (the committed record, which compare.py draws into picture/ and the README) and runs/
    (ignored by git) for any other configuration. Refuses to put anything but a preset's run inside
    the committed results/."""
    differ = EXPERIMENTS[name].off_preset(dataclasses.asdict(config))
    if config.out is None:
        if differ:
            print(f"note: {name} with {', '.join(differ)} is not its preset, so not the committed record: results "
                  f"go to {TRIALS}/, and compare.py draws them into {TRIALS}/picture/", file=sys.stderr)
        return TRIALS if differ else COMMITTED
    if differ and inside(config.out, Path(__file__).parent / COMMITTED):
        parser.error(f"argument --out: {COMMITTED}/ holds the experiments' own presets only (the committed record), "
                     f"and this {name} run has {', '.join(differ)}: leave --out out (it goes to {TRIALS}/) or give "
                     "a folder outside it")
    return config.out


def unused_flags(experiment: str, given: dict) -> dict[str, str]:
    """The flags of ``given`` that ``experiment`` does not read, each with the one line that refuses it:
    settings its class does not hold (with why, where a preset dropped a setting of the regression task),
    and those it runs with one value alone (its ``ONLY``) given another."""
    cls, problems = EXPERIMENTS[experiment].settings, {}
    own = {f.name for f in dataclasses.fields(cls)}
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if name not in own:
            why = getattr(cls, "DROPPED", {}).get(name, f"`train.py {experiment} --help` lists its settings")
            problems[name] = f"{flag}: the {experiment} experiment does not use it ({why})"
        elif name in cls.ONLY:
            only, why = cls.ONLY[name]
            if not same_setting(name, value, only):
                problems[name] = f"{flag}: the {experiment} experiment runs with {as_text(only)} only ({why})"
    return problems


# ----------------------------------------------------------------------------------------------
# Running an experiment, in this process or in a group of them


def run_here(experiment: str, config: Settings) -> dict:
    """Run one experiment in this process (alone, or as one of a group); the first process logs. The
    results' config holds the settings the experiment read, not those it does not use."""
    torch.set_num_threads(config.threads)
    record = EXPERIMENTS[experiment]
    log = progress.current().write if process_rank()[0] == 0 and not progress.current().quiet else lambda _: None
    return {"experiment": experiment, **record.run(config, log=log)}


def available_backend(configs: dict[str, Settings]) -> tuple[dict[str, Settings], str | None]:
    """``configs`` with the MyBN backend that will really run, and a note for the results where that
    is not the one asked for (``--mybn-backend cpp`` where the C++ backend cannot be built)."""
    if not any(c.mybn_backend == "cpp" for c in configs.values()) or my_bn_cpp.available():
        return configs, None
    note = (f"--mybn-backend cpp: the C++ backend was not available ({my_bn_cpp.unavailable_because()}); MyBN ran "
            "its Python backend")
    return {name: dataclasses.replace(c, mybn_backend="python") for name, c in configs.items()}, note


def save(experiment: str, config: Settings, results: dict, fallback: str | None = None) -> Path:
    if fallback:
        results["environment"]["fallback"] = fallback
    path = save_results(results, EXPERIMENTS[experiment].results_path(config.out).parent)
    print(EXPERIMENTS[experiment].summary(results))
    print(f"wrote {path}")
    return path


@contextlib.contextmanager
def writing_alone(configs: dict[str, Settings]):
    """Hold a lock on each results file this run will write, for the whole run: a second train.py that
    would write one of them is refused in one line before it trains, where one of the two results was
    lost. The locks live in the temporary folder, one per file path, and end with their process."""
    paths = sorted({EXPERIMENTS[name].results_path(c.out).resolve() for name, c in configs.items()})
    with contextlib.ExitStack() as stack:
        for path in paths:
            digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
            lock = FileLock(Path(tempfile.gettempdir()) / f"bn-train-{digest}.lock")
            try:
                stack.enter_context(lock.acquire(timeout=0))
            except Timeout:
                sys.exit(f"train.py: another train.py is writing {path} now: wait for it to end, or give another "
                         "--out")
        yield


class GroupFailed(Exception):
    """A process of a ``--nproc`` group ended before the experiment did."""


def _group_process(rank: int, experiment: str, config: Settings, port: int, handover: str) -> None:
    """One of the ``config.nproc`` processes started by ``run_distributed``; the first leaves the
    results in ``handover`` for the parent, which saves them once every process has finished."""
    leave_stopping_to_the_parent()
    if rank > 0:  # the first process shows the group's progress
        progress.silence()
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


def run_distributed(experiment: str, config: Settings) -> dict:
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
                 for rank in range(config.nproc)]
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
    configs, quiet = parse_args(argv)
    numerics.apply()  # before torch computes: the record's rounding is the same on every x86-64 CPU
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this process is one of the group already
        configs, fallback = available_backend(configs)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            for experiment, config in configs.items():
                config = dataclasses.replace(config, nproc=dist.get_world_size())
                if process_rank()[0] == 0:
                    print(f"== {experiment}")
                shown = progress.Progress(experiment, quiet=quiet or process_rank()[0] > 0)
                with progress.tracking(shown):
                    results = run_here(experiment, config)
                if process_rank()[0] == 0:
                    save(experiment, config, results, fallback)
            dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
        finally:
            dist.destroy_process_group()
        return 0
    written = []
    try:
        with stop_signals_as_interrupt(), writing_alone(configs):
            configs, fallback = available_backend(configs)  # built (or found wanting) before any worker forks
            if fallback:
                print(f"train.py: {fallback}; the results say so", file=sys.stderr)
            for experiment, config in configs.items():
                print(f"== {experiment}", flush=True)  # flushed before any fork, or a child would print it again
                with progress.tracking(progress.Progress(experiment, quiet=quiet)):
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
