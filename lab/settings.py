"""Every setting of a training run, in one typed dataclass whose fields generate train.py's flags.

``Config`` holds the defaults (those of the main experiment); each experiment's preset changes some of
them. ``flag`` and ``build_parser`` turn any such dataclass into an argparse command line, for
compare.py and bench.py too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}
RESULTS_FILE = "results.json"  # what train.py writes into OUT (or OUT/NAME), and compare.py reads
COMMITTED = "results"  # the experiments' presets' results: the committed record, drawn into the README
TRIALS = "runs"  # any other configuration's results (ignored by git), and their figures and tables


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
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
seed_int = _number(int, lambda v: 0 <= v < 2**64, "an integer from 0 to 2**64 - 1 (a generator seed)")
batch_int = _number(int, lambda v: v >= 2, "an integer >= 2 (batch norm needs two samples)")


def flag(default, help: str, **argparse_kwargs):
    """A Config field that carries its own argparse settings (``help_hidden=True``: not in --help)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **argparse_kwargs})
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class Config:
    """Every setting of a run: the single source of the defaults and of train.py's flags."""

    ranges: list[float] = flag([1.0, 5.0], "each R trains on inputs in (-R, R)", type=positive_float, metavar="R")
    models: list[str] = flag(  # which names exist is lab.nets.VARIANTS's to say: see build_parser's choices
        ["plain", "torch_bn", "my_bn"], "nets to train", metavar="MODEL"
    )
    seeds: list[int] = flag(
        [0, 1, 2, 3, 4], "seeds: data noise, initial weights, batch order", type=seed_int, metavar="SEED"
    )
    epochs: int = flag(10, "training epochs", type=positive_int)
    batch_size: int = flag(64, "mini-batch size", type=batch_int)
    lr: float | None = flag(
        0.02, "learning rate, of every range (an experiment's preset may choose one per range instead)",
        type=positive_float,
    )
    optimizer: str = flag("adam", "adam, or sgd (plain: no momentum)", choices=("adam", "sgd"))
    bn_momentum: float = flag(0.5, "momentum of the batch-norm layers, as in the original", type=unit_float)
    mybn_backend: str = flag(
        "python",
        "MyBN's backend: python (the my_bn package), or cpp (hand-written C++ loops, built on first use; needs "
        "a compiler)",
        choices=("python", "cpp"),
    )
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
    out: str | None = flag(  # None: COMMITTED for a run of an experiment's preset, TRIALS for any other (train.py)
        None, f"output directory: OUT/{RESULTS_FILE}, or OUT/NAME/{RESULTS_FILE} for experiment NAME"
    )


def as_text(value) -> str:
    """A setting's value as a flag takes it: a list as its items separated by spaces."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def as_flag(setting: str, value) -> str:
    """A setting as the flag that gives it: ``--seeds 0 1 2``, ``--no-diagnostics``."""
    name = setting.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {as_text(value)}"


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def check_values(config_cls: type, values: dict, choices: dict[str, tuple] | None = None) -> None:
    """Raise ValueError naming the first entry of ``values`` (a config as a results file records it)
    that the command line would refuse: an unknown name, a value its flag's type or choices reject
    (a seed past 2**64, a negative epoch count), or a type of value the flag cannot give. ``choices``:
    as ``build_parser``'s."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    choices = choices or {}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"config: unknown setting {name!r}")
        meta, default = fields[name].metadata, _default(fields[name])
        if isinstance(default, list) and not (isinstance(value, list) and value):
            raise ValueError(f"config: {name!r} must be a non-empty list, got {value!r}")
        for item in value if isinstance(default, list) else [value]:
            if item is None and "None" in str(fields[name].type):
                continue
            if meta.get("action") is argparse.BooleanOptionalAction:
                ok = isinstance(item, bool)
            elif "type" in meta:
                ok = not isinstance(item, (bool, list, dict)) and item is not None
                try:
                    ok = ok and meta["type"](str(item)) == item
                except argparse.ArgumentTypeError as exc:
                    raise ValueError(f"config: {name!r}: {exc}") from None
            else:
                ok = isinstance(item, str)
            allowed = choices.get(name, meta.get("choices"))
            if not ok or (allowed is not None and item not in allowed):
                raise ValueError(f"config: {name!r} cannot be {item!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the flag, exit status 2: no usage dump above it."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(
    config_cls: type,
    description: str | None,
    *,
    suppress_defaults: bool = False,
    shown: dict[str, str] | None = None,
    epilog: str | None = None,
    choices: dict[str, tuple] | None = None,
) -> argparse.ArgumentParser:
    """argparse flags generated from a config dataclass: --batch-size for batch_size, and so on.

    With ``suppress_defaults`` only the flags actually given appear in the parsed namespace. ``shown``
    replaces the help's "(default: ...)" of the named fields (an experiment's preset, say). ``choices``:
    the values a field may take where the caller knows them (the nets, say, which lab/nets.py defines:
    the settings know nothing of the model code), shown in its help.
    """
    parser = _Parser(description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(config_cls):
        meta, default = dict(f.metadata), _default(f)
        note = (shown or {}).get(f.name, f"default: {as_text(default)}")
        text, hidden = meta.pop("help"), meta.pop("help_hidden", False)  # hidden: an internal flag
        if f.name in (choices or {}):
            meta["choices"] = tuple(choices[f.name])
            text = f"{text}, any of: {' '.join(meta['choices'])}"
        kwargs = {"help": argparse.SUPPRESS if hidden else f"{text} ({note})", "default": default, **meta}
        if isinstance(default, list):
            kwargs["nargs"] = "+"
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


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
