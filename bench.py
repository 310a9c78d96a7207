"""Benchmark MyBN against nn.BatchNorm1d, and train.py's loop against a DataLoader loop.

python bench.py                            # the full table: every shape, both allocator settings
python bench.py --shapes 64x10 8192x1024 --no-cpp --no-train-loop
python bench.py --json bench.json          # the same numbers for tools
python bench.py --readme docs/speed.md     # and the table into the Speed page
python bench.py --device cuda --no-train-loop --json results/bench_cuda.json --readme docs/speed.md
python bench.py --report results/bench.json  # the tables of a saved run, measuring nothing

Times are medians from torch.utils.benchmark, in milliseconds, train mode, float32, each with the
spread of its timings (± half the interquartile range), and each ratio to native with the range of
its rounds' own ratios; ⚠ marks a cell the Timer warns about (a spread of 10% of the median or
more), and the Timer's warnings go to stderr as they come. "MyBN" is the Python backend, "MyBN C++"
is MyBN(backend="cpp") (CPU only). Each allocator setting runs in its own process, since glibc reads
GLIBC_TUNABLES only at start-up: "default" is glibc as it comes; "tuned" keeps freed memory in the
heap instead of returning it to the system, so that large tensors are not page-faulted in afresh on
every allocation. The bandwidth bound is the time to move the bytes a pass must touch at the copy
bandwidth measured in the same process: read x and write y for the forward; that plus read x and dy
and write dx for forward and backward.

The kernels race at their best: this process leaves PyTorch's choice of CPU kernels as it is (it does
not apply lab/numerics.py's portable policy, which the experiments compute under). The README's main
command, timed end to end, runs as the README runs it: train.py and compare.py each apply the policy
(or not, with BN_NUMERICS=native).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils import benchmark

import my_bn
from lab import numerics
from lab.benchmarks import format_train_table, train_loop_rows
from lab.pages import replace_between_markers, table
from lab.results import atomic_write
from lab.settings import build_parser, flag, positive_float, resolve_device
from my_bn import MyBN, MyBN2d

ALLOCATORS = {
    "default": None,
    "tuned": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184",
}
LAYERS = ("native", "mybn", "mybn_cpp")  # the implementations timed: PyTorch's, MyBN's two backends
# columns of the table; "mybn_compiled" (MyBN(compiled=True), retired with the C++ backend) is in older runs
LABELS = {"native": "native", "mybn": "MyBN", "mybn_cpp": "MyBN C++", "mybn_compiled": "compiled"}
PASSES = {"fwd": 2, "fwd+bwd": 5}  # pass -> how many times it must move the tensor's bytes
ROUNDS = 5  # the variants of a shape take turns this many times (see measure)
NOISY = 0.1  # an interquartile range of this fraction of the median or more: too noisy to trust (the Timer's own)
FORMAT = 2  # of bench.json; 2: spreads (iqr_ms, round_ms, ratio_range), the Timer's warnings, noisy. Without it: 1


@dataclass
class BenchConfig:
    """What bench.py measures."""

    shapes: list[str] = flag(
        ["64x10", "1024x256", "8192x1024", "65536x512", "256x128x256"], "input shapes, NxC or NxCxL", metavar="SHAPE"
    )
    device: str = flag("auto", "cpu, cuda, or auto (CUDA when present, against cuDNN)")
    allocator: str = flag("both", "glibc allocator setting(s) on the CPU", choices=("both", *ALLOCATORS))
    cpp: bool = flag(
        True,
        "also time MyBN(backend='cpp') (built on first use; needs a C++ compiler)",
        action=argparse.BooleanOptionalAction,
    )
    reference: bool = flag(
        False,
        "also time MyBN with my_bn.REFERENCE_ONLY (the reference functions for every input), against MyBN as it "
        "dispatches",
        action=argparse.BooleanOptionalAction,
    )
    train_loop: bool = flag(
        True,
        "also time train.py's loop against a DataLoader(num_workers=2) loop",
        action=argparse.BooleanOptionalAction,
    )
    min_run_time: float = flag(1.0, "seconds of timing per measurement, over all its rounds", type=positive_float)
    json: str | None = flag(None, "also write every number as JSON to this file", metavar="FILE")
    readme: str | None = flag(
        None, "also write the tables into this page (docs/speed.md) between bench-table or bench-cuda-table markers"
    )
    report: str | None = flag(None, "measure nothing: print the tables of a run saved with --json", metavar="FILE")
    child: str | None = flag(None, "internal: measure in this process for this allocator setting", help_hidden=True)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3, 4) or min(shape) < 1 or shape[0] * (shape[2] if len(shape) > 2 else 1) < 2:
        raise ValueError(
            f"argument --shapes: expected NxC, NxCxL or NxCxHxW with two or more values per channel, got {text!r}"
        )
    return shape


def timed(stmt: str, min_run_time: float, **env) -> benchmark.Measurement:
    """``stmt`` timed by torch.utils.benchmark, with the threads torch uses here (Timer's default is one)."""
    timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second moved by copying a 256 MiB tensor (read + write)."""
    src = torch.randn(64 << 20, device=device)
    dst = torch.empty_like(src)
    seconds = timed("dst.copy_(src)", 1.0, dst=dst, src=src).median
    return 2 * src.numel() * src.element_size() / seconds


def timer_warnings(measurement: benchmark.Measurement) -> list[str]:
    """The warnings torch.utils.benchmark prints with a measurement (a wide interquartile range), one
    line each."""
    text = repr(measurement)
    return [" ".join(part.split()) for part in text.split("WARNING:")[1:]]


def spread(rounds: list[benchmark.Measurement], native: list[benchmark.Measurement]) -> dict:
    """A cell's numbers from its rounds: the median of the rounds' medians (ms), the interquartile
    range of every timing of every round together (ms), the ratio to native per round (the rounds
    are paired: the variants take turns), the Timer's warnings, and whether the cell is too noisy
    to trust: an interquartile range of 10% of the median or more, its own or native's (the
    Timer's own threshold)."""
    pooled, pooled_native = benchmark.Measurement.merge(rounds)[0], benchmark.Measurement.merge(native)[0]
    ms = statistics.median(m.median for m in rounds) * 1e3
    ratios = [m.median / n.median for m, n in zip(rounds, native, strict=True)]
    return {
        "median_ms": ms, "iqr_ms": pooled.iqr * 1e3, "round_ms": [m.median * 1e3 for m in rounds],
        "ratio_to_native": ms / (statistics.median(n.median for n in native) * 1e3),
        "ratio_range": [min(ratios), max(ratios)], "warnings": timer_warnings(pooled),
        "noisy": not (pooled.meets_confidence(NOISY) and pooled_native.meets_confidence(NOISY)),
    }


class _MulAdd(torch.autograd.Function):
    """The least a custom autograd.Function can do: y = x * w + b, and its backward."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.addcmul(b, x, w)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        return dy * w, (dy * x).sum(0), dy.sum(0)


class FunctionFloor(nn.Module):
    """A layer made of ``_MulAdd``: what any hand-written layer pays before doing any batch norm."""

    def __init__(self, channels: int, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, device=device))
        self.bias = nn.Parameter(torch.zeros(channels, device=device))

    def forward(self, x):
        return _MulAdd.apply(x, self.weight, self.bias)


class ReferenceOnly(nn.Module):
    """A MyBN layer run with ``my_bn.REFERENCE_ONLY``: what my_bn.fast's versions are measured against."""

    def __init__(self, layer: MyBN):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        my_bn.REFERENCE_ONLY = True  # read in the forward, which fixes the backward's path too
        try:
            return self.layer(x)
        finally:
            my_bn.REFERENCE_ONLY = False


def make_layer(variant: str, shape: tuple[int, ...], device: torch.device) -> nn.Module:
    channels = shape[1]
    if variant == "floor":
        return FunctionFloor(channels, device=device)
    if variant == "native":
        return (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(channels, device=device)
    backend = "cpp" if variant == "mybn_cpp" else "python"
    layer = (MyBN2d if len(shape) == 4 else MyBN)(channels, device=device, backend=backend)
    return ReferenceOnly(layer) if variant == "mybn_reference" else layer


def measure(config: BenchConfig, allocator: str) -> list[dict]:
    """Every (shape, variant, pass) in this process.

    The variants of one shape take turns, ``ROUNDS`` times, and each number is the median of its
    rounds: a burst of load from elsewhere on a shared machine then lands on every variant alike,
    instead of on whichever one was being timed.
    """
    device = resolve_device(config.device)
    bandwidth = copy_bandwidth(device)
    stmts = {"fwd": "layer(x)", "fwd+bwd": "xr.grad = None; layer(xr).backward(dy)"}
    rows = []
    for text in config.shapes:
        shape = parse_shape(text)
        x = torch.randn(shape, device=device)
        dy = torch.randn(shape, device=device)
        xr = x.clone().requires_grad_()
        nbytes = x.numel() * x.element_size()
        variants = [v for v in LAYERS if config.cpp and device.type == "cpu" or v != "mybn_cpp"]
        if len(shape) == 2 and x.numel() <= 1024:
            variants.append("floor")  # small enough that only the per-call overhead counts
        if config.reference:
            variants.append("mybn_reference")
        layers = {}
        for variant in variants:
            layer = make_layer(variant, shape, device)
            try:
                layer(xr).backward(dy)  # warm-up (and compilation)
            except Exception as exc:  # noqa: BLE001 - a missing compiler must not end the benchmark
                print(f"  {variant} {text}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
                continue
            layers[variant] = layer
        times = {(variant, name): [] for variant in layers for name in stmts}
        for _ in range(ROUNDS):
            for (variant, name), samples in times.items():
                env = {"layer": layers[variant], "x": x, "xr": xr, "dy": dy}
                samples.append(timed(stmts[name], config.min_run_time / ROUNDS, **env))
        for (variant, name), samples in times.items():
            cell = spread(samples, times["native", name])
            bound = PASSES[name] * nbytes / bandwidth * 1e3
            rows.append({
                "device": str(device), "allocator": allocator, "shape": list(shape), "variant": variant,
                "pass": name, **cell, "bound_ms": bound, "fraction_of_bound": bound / cell["median_ms"],
                "copy_bandwidth_GBs": bandwidth / 1e9,
            })
            for warning in cell["warnings"]:
                print(f"  {LABELS.get(variant, variant)} {text} {name} ({allocator} allocator): {warning}",
                      file=sys.stderr)
        print(f"  measured {text} ({allocator} allocator)", file=sys.stderr)
    return rows


def run_children(config: BenchConfig, argv: list[str]) -> list[dict]:
    """One process per allocator setting (glibc reads GLIBC_TUNABLES at start-up only)."""
    settings = list(ALLOCATORS) if config.allocator == "both" else [config.allocator]
    device = resolve_device(config.device)
    if device.type == "cuda":
        settings = settings[:1]  # the CUDA caching allocator does not use glibc's
    rows = []
    for setting in settings:
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if ALLOCATORS[setting]:
            env["GLIBC_TUNABLES"] = ALLOCATORS[setting]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [sys.executable, __file__, *argv, "--child", setting, "--json", str(out), "--no-train-loop"]
            subprocess.run(cmd, env=env, check=True)
            rows += json.loads(out.read_text())
    return rows


def format_table(rows: list[dict]) -> str:
    """One markdown table: a line per (allocator, shape, pass), the variants side by side."""
    variants = [v for v in LABELS if any(r["variant"] == v for r in rows)]
    mine = [v for v in variants if v != "native"]
    header = ("allocator", "shape", "pass", "native ms", *(f"{LABELS[v]} {what}" for v in mine for what in
                                                        ("ms", "× native")),
              "bound ms", f"% of bound: {' / '.join(LABELS[v] for v in variants)}")
    cells = []
    keys = list(dict.fromkeys((r["allocator"], tuple(r["shape"]), r["pass"]) for r in rows))
    for allocator, shape, name in keys:
        cell = {
            r["variant"]: r for r in rows if (r["allocator"], tuple(r["shape"]), r["pass"]) == (allocator, shape, name)
        }

        def fmt(variant: str, key: str, spec: str, cell: dict = cell) -> str:
            return format(cell[variant][key], spec) if variant in cell else "–"

        def ms(variant: str, cell: dict = cell) -> str:
            """The median, with the interquartile range where the run recorded it."""
            if variant not in cell or "iqr_ms" not in cell[variant]:
                return fmt(variant, "median_ms", ".3g")
            return f"{cell[variant]['median_ms']:.3g} ±{cell[variant]['iqr_ms'] / 2:.2g}"

        def ratio(variant: str, cell: dict = cell) -> str:
            """The ratio to native, with its range over the paired rounds, marked where too noisy."""
            if variant not in cell or "ratio_range" not in cell[variant]:
                return fmt(variant, "ratio_to_native", ".2f")
            low, high = cell[variant]["ratio_range"]
            flag = " ⚠" if cell[variant]["noisy"] else ""
            return f"{cell[variant]['ratio_to_native']:.2f} ({low:.2f}–{high:.2f}){flag}"

        cells.append([allocator, "×".join(map(str, shape)), name, ms("native"),
                      *(text for v in mine for text in (ms(v), ratio(v))), fmt("native", "bound_ms", ".3g"),
                      " / ".join(fmt(v, "fraction_of_bound", ".0%") for v in variants)])
    lines = [table(header, cells)]
    if any("iqr_ms" in r for r in rows):
        noisy = sum(bool(r.get("noisy")) for r in rows if r["variant"] not in ("native", "floor"))
        lines += ["", f"Times: median ±half the interquartile range of every timing, over {ROUNDS} rounds in which "
                  "the variants take turns. Ratios: of the medians, with the lowest and highest of the rounds' own "
                  f"ratios in brackets. ⚠: an interquartile range of {NOISY:.0%} of the median or more, the cell's "
                  "or native's (torch.utils.benchmark's own warning threshold): too noisy to trust; "
                  f"{noisy} cell(s) here."]
    floors = [r for r in rows if r["variant"] == "floor" and r["pass"] == "fwd+bwd"]
    for r in floors:
        lines += ["", f"At {'×'.join(map(str, r['shape']))} ({r['allocator']} allocator), a custom autograd.Function "
                  f"that does nothing but one multiply-add, forward and backward, takes {r['median_ms']:.3g} ms: "
                  f"{r['ratio_to_native']:.2f} × native batch norm."]
    references = []
    for r in rows:
        if r["variant"] == "mybn_reference":
            mine = next(m for m in rows if m["variant"] == "mybn" and (m["allocator"], m["shape"], m["pass"])
                        == (r["allocator"], r["shape"], r["pass"]))
            references.append([r["allocator"], "×".join(map(str, r["shape"])), r["pass"], f"{r['median_ms']:.3g}",
                               f"{mine['median_ms']:.3g}", f"{r['median_ms'] / mine['median_ms']:.2f}×"])
    if references:
        lines += ["", table(("allocator", "shape", "pass", "reference alone ms", "MyBN ms",
                             "speed-up over the reference"), references)]
    return "\n".join(lines)


def machine() -> str:
    cpu = numerics.cpu_name()
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name()}"
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"{torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(BenchConfig, __doc__)
    config = BenchConfig(**vars(parser.parse_args(argv)))
    try:
        for text in config.shapes:
            parse_shape(text)
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(str(exc))
    if config.child:  # measure here, for the parent
        rows = measure(config, config.child)
        Path(config.json).write_text(json.dumps(rows))
        return 0
    if config.report:
        try:
            payload = json.loads(Path(config.report).read_text())
            if payload.get("format", 1) > FORMAT:
                raise ValueError(f"format {payload['format']}, newer than this bench.py's {FORMAT}")
            report = format_report(payload)
            on_cpu = payload["kernels"][0]["device"] == "cpu"
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            parser.error(f"argument --report: {config.report} is not a results file of bench.py --json ({exc})")
    else:
        on_cpu = resolve_device(config.device).type == "cpu"
    marker = "bench-table" if on_cpu else "bench-cuda-table"  # the CPU tables and the CUDA one
    if config.readme:  # checked before minutes of measuring, not after
        try:
            replace_between_markers(Path(config.readme).read_text(encoding="utf-8"), marker, "")
        except (OSError, ValueError) as exc:
            parser.error(f"argument --readme: {exc}")
    if not config.report:
        about = machine()  # before train_loop_rows, which sets the thread count of a training run
        kernel_rows = run_children(config, _strip(argv))
        train_rows = train_loop_rows(cpp=config.cpp) if config.train_loop else []
        payload = {"format": FORMAT, "my_bn": my_bn.__version__, "machine": about, "kernels": kernel_rows,
                   "training": train_rows}
        if config.json:
            atomic_write(Path(config.json), lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n"))
        report = format_report(payload)
    print(report)
    if config.readme:
        readme = Path(config.readme)
        updated = replace_between_markers(readme.read_text(encoding="utf-8"), marker, report)
        atomic_write(readme, lambda tmp: tmp.write_text(updated, encoding="utf-8"))
    return 0


def format_report(payload: dict) -> str:
    """What a run prints: the machine, the kernel table and, if measured, the training-loop table."""
    bandwidth = {r["allocator"]: r["copy_bandwidth_GBs"] for r in payload["kernels"]}
    copy = ", ".join(f"{gbs:.1f} GB/s ({name} allocator)" for name, gbs in bandwidth.items())
    text = [f"Machine: {payload['machine']}. Copy bandwidth: {copy}.", "", format_table(payload["kernels"])]
    if payload["training"]:
        text += ["", format_train_table(payload["training"])]
    return "\n".join(text)


def _strip(argv: list[str]) -> list[str]:
    """The command line without the options the parent alone handles."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--json", "--readme"):
            skip = True
        elif not arg.startswith(("--json=", "--readme=")):
            out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
