"""How an experiment declares itself: one ``Experiment`` record, the last statement of its module
(``experiments/NAME.py``), listed once in the registry (``experiments/__init__.py``).

train.py (the list of experiments, their help, their presets, how each runs and what it summarises),
compare.py (the checks on loading, the figures, the tables, each experiment's page in docs/) and the
verdict table read the records and nothing else of the modules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.plotting import Figures
from lab.regression import format_table, summarize
from lab.results import check_results
from lab.settings import RESULTS_FILE, Settings, as_flag, same_setting
from lab.verdicts import Verdict

Log = Callable[[str], None]


def no_check(results: dict) -> None:
    """Results in the experiment's format are all its figures and tables need."""


def summary_of_runs(results: dict) -> str:
    """The final test MSE per range and net, mean ± std over seeds: the regression task's summary."""
    return format_table(summarize(results))


def checked_runs(results: dict, models: tuple[str, ...]) -> list[dict]:
    """``results["runs"]``, a ValueError naming the first run that is not an object with a model of ``models``
    (the start of an experiment's ``results_format`` where its runs are not the regression task's)."""
    runs = results["runs"]
    if not isinstance(runs, list) or not runs:
        raise ValueError("'runs' must be a non-empty list")
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or run.get("model") not in models:
            raise ValueError(f"runs[{i}]: an object with a model of {', '.join(models)}")
    return runs


def runs_with(keys: tuple[str, ...], what: str) -> Callable[[dict], None]:
    """A ``check``: every run must hold ``keys`` (results written before the experiment measured them
    do not); the error names the command to rerun."""

    def check(results: dict) -> None:
        if any(key not in run for run in results["runs"] for key in keys):
            name = results.get("experiment", "main")
            raise ValueError(f"the {name} figure and table need {what}: rerun `python train.py {name}`")

    return check


@dataclass(frozen=True)
class Experiment:
    """Everything the rest of the code knows of one experiment.

    ``figures``, ``tables`` and ``verdicts`` are called with the experiment's results, then those of
    each experiment it ``needs``, in that order; where one of those is missing they are not called.
    """

    name: str
    doc: str  # the module's docstring: the first sentence lists it in `train.py --help`, the whole in `NAME --help`
    settings: type[Settings]  # its settings: its hyperparameters as flags, its preset as their defaults
    run: Callable[[Settings, Log], dict]  # trains and measures; returns the results (regression.run_experiment, mostly)
    figures: Callable[..., Figures]  # file name -> what draws it into the path it is given
    tables: Callable[..., dict[str, str]]  # marker name -> the generated table, written into its page
    needs: tuple[str, ...] = ()  # the other experiments whose results its figures, tables and verdicts read
    check: Callable[[dict], None] = no_check  # a ValueError for what its figures need beyond the format
    results_format: Callable[[dict], None] = check_results  # a ValueError for what its results file lacks
    summary: Callable[[dict], str] = summary_of_runs  # what train.py prints when it is done
    verdicts: Callable[..., list[Verdict]] | None = None  # its rows of the verdict table
    part: Callable[[dict, dict], str] | None = None  # (results, run) -> the part of its design the run is, in its CSV

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"an experiment's name is lower case, digits and _, got {self.name!r}")

    def preset_config(self) -> Settings:
        """The settings of its own preset: what ``train.py NAME`` runs."""
        return self.settings()

    def results_path(self, root: str | Path) -> Path:
        """Where its results are under ``root``: ROOT/results.json for main, ROOT/NAME/results.json for the others."""
        return Path(root) / RESULTS_FILE if self.name == "main" else Path(root) / self.name / RESULTS_FILE

    def first_sentence(self) -> str:
        """The first sentence of its docstring, without a leading "NAME: "."""
        doc = " ".join(self.doc.split("\n\n")[0].split())
        return re.split(r"(?<=[.?])\s", doc, maxsplit=1)[0].removeprefix(f"{self.name}: ")

    def inputs(self, experiments: dict[str, dict]) -> tuple[dict, ...] | None:
        """Its results, then those of each experiment it needs; None where one is missing."""
        names = (self.name, *self.needs)
        return tuple(experiments[n] for n in names) if all(n in experiments for n in names) else None

    def off_preset(self, config: dict) -> list[str]:
        """The settings of ``config`` (its settings as a dict, or the config a results file records) where it
        differs from its preset, as flags with their values (``--epochs 2``): empty for a run of the preset
        itself. Where results are written and the worker count do not count (``NOT_RESULTS``)."""
        preset = dataclasses.asdict(self.preset_config())
        differ = []
        for setting, value in config.items():
            if setting in NOT_RESULTS or setting not in preset:
                continue
            if not same_setting(setting, value, preset[setting]):
                differ.append(as_flag(setting, value))
        return differ


# Settings that change nothing in the results: where they are written, and how many processes share
# the runs (each run is deterministic on its own).
NOT_RESULTS = ("out", "workers")
