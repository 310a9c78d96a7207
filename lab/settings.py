"""Settings as typed dataclasses whose fields generate the command line's flags.

``Settings`` holds what every experiment takes; each experiment's own class adds its hyperparameters,
its preset as their defaults (``lab/regression.py``'s ``Regression`` is the regression task's, the
main experiment's). ``flag`` and ``build_parser`` turn any such dataclass into an argparse command
line, for compare.py, verdicts.py and bench.py too.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from my_bn.settings import BACKENDS

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
    """A settings field that carries its own argparse settings (``help_hidden=True``: not in --help;
    ``labels``: a name -> description of each choice, shown in --help beside it)."""
    return _field(default, {"help": help, **argparse_kwargs})


def _field(default, metadata) -> dataclasses.Field:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


TEN_SEEDS = list(range(10))  # where an experiment costs little (the MLP tasks, depth): lab/stats.py says why


@dataclass
class Settings:
    """What every experiment takes: its seeds, the numerics and device it computes on, the processes it
    runs in, and where its results go.

    An experiment's settings are a dataclass of its own on top of this one, its hyperparameters (grids
    included) as fields, each a ``flag``, its preset as their defaults: ``train.py NAME`` runs
    ``Settings()`` of NAME's class, and the flags given beside it replace fields. ``ONLY`` names the
    settings it runs with one value alone, and ``problem`` says why a value cannot run.
    """

    seeds: list[int] = flag(
        list(range(5)), "seeds: data noise, initial weights, batch order", type=seed_int, metavar="SEED"
    )
    mybn_backend: str = flag(
        "python",
        "MyBN's backend: python (the my_bn package), or cpp (hand-written C++ loops, built on first use; needs "
        "a compiler)",
        choices=BACKENDS,
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

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {}  # setting -> (the one value it runs with, why)

    def problem(self) -> str | None:
        """Why these settings cannot run, as argparse names a flag (``argument --nproc: ...``); None where
        they can. Here: a setting of ``ONLY`` with another value."""
        for name, (value, why) in self.ONLY.items():
            if not same_setting(name, getattr(self, name), value):
                return f"argument --{name.replace('_', '-')}: {as_text(value)} only ({why})"
        return None

    @classmethod
    def preset(cls, name: str, module: str, drop: dict[str, str] | None = None,
               only: dict[str, tuple[object, str]] | None = None, **defaults) -> type[Settings]:
        """These settings as another experiment's class ``name`` (defined in ``module``, for pickling): other
        defaults (its preset), without the settings of ``drop`` (setting -> why it reads none), and with
        ``only`` on top of ``ONLY``."""
        drop = drop or {}
        specs = []
        for f in dataclasses.fields(cls):
            if f.name not in drop:
                default = defaults.pop(f.name, _default(f))
                specs.append((f.name, f.type, _field(default, f.metadata)))
        if defaults:
            raise TypeError(f"{cls.__name__} has no setting {next(iter(defaults))!r}")
        namespace = {"problem": cls.problem, "ONLY": {**cls.ONLY, **(only or {})}, "DROPPED": drop}
        made = dataclasses.make_dataclass(name, specs, bases=(Settings,) if drop else (cls,), namespace=namespace)
        made.__module__, made.__qualname__ = module, name
        return made

    @classmethod
    def from_record(cls, config: dict) -> Settings:
        """The settings a results file records (``config``), with this class's defaults for any it lacks."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


def same_setting(name: str, a, b) -> bool:
    """Whether two values of setting ``name`` are the same setting here: equal, or for ``device`` two names
    of one device (``same_device``)."""
    return same_device(a, b) if name == "device" else a == b


def same_device(a: str, b: str) -> bool:
    """Whether two device names are one device here (auto and cpu on a machine without CUDA)."""
    if a == b:
        return True
    try:
        return resolve_device(a) == resolve_device(b)
    except ValueError:  # a device this machine does not have: only the same name is the same
        return False


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


def check_values(config_cls: type, values: dict) -> None:
    """Raise ValueError naming the first entry of ``values`` (a config as a results file records it)
    that the command line would refuse: an unknown name, a value its flag's type or choices reject
    (a seed past 2**64, a negative epoch count), or a type of value the flag cannot give."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"config: unknown setting {name!r}")
        meta, default = fields[name].metadata, _default(fields[name])
        if isinstance(default, list) and not (isinstance(value, list) and (value or meta.get("nargs") == "*")):
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
            allowed = meta.get("choices")
            if not ok or (allowed is not None and item not in allowed):
                any_of = f" (any of: {', '.join(allowed)})" if allowed is not None else ""
                raise ValueError(f"config: {name!r} cannot be {item!r}{any_of}")


def plain_text(text: str | None) -> str | None:
    """A docstring's text as a terminal shows it: reST's ``code`` as `code`."""
    return None if text is None else re.sub(r"``([^`]+)``", r"`\1`", text)


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
    also: tuple[type, ...] = (),
) -> argparse.ArgumentParser:
    """argparse flags generated from a settings dataclass: --batch-size for batch_size, and so on.

    With ``suppress_defaults`` only the flags actually given appear in the parsed namespace. ``shown``
    replaces the help's "(default: ...)" of the named fields (an experiment's preset, say). ``also``:
    other settings classes whose fields the command line takes too, left out of the help (each
    experiment's own flags, which ``train.py all`` passes on to the experiments that read them).
    """
    parser = _Parser(description=plain_text(description), epilog=plain_text(epilog),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    seen, common = set(), {f.name for f in dataclasses.fields(Settings)}
    for cls in (config_cls, *also):
        for f in sorted(dataclasses.fields(cls), key=lambda f: f.name in common):  # its own settings first
            if f.name in seen:
                continue
            seen.add(f.name)
            meta, default = dict(f.metadata), _default(f)
            text, hidden = plain_text(meta.pop("help")), meta.pop("help_hidden", False) or cls is not config_cls
            labels = meta.pop("labels", None)
            if isinstance(default, list) and "choices" in meta:
                choices = (f"{c}: {labels[c]}" if labels and c in labels else c for c in meta["choices"])
                text = f"{text}, any of: {('; ' if labels else ' ').join(choices)}"
            note = (shown or {}).get(f.name, None if "(default:" in text or default is None else
                                     f"default: {as_text(default)}")  # a help that says its default: once
            kwargs = {"help": argparse.SUPPRESS if hidden else f"{text} ({note})" if note else text, "default": default,
                      **meta}
            if isinstance(default, list):
                kwargs.setdefault("nargs", "+")
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
