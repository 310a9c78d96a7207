"""The experiments, registered by name. Each module of this folder holds one experiment whole (its
training or measurement, its figures, its tables, its verdicts) and ends by declaring it: one
``record.Experiment``, named ``EXPERIMENT``. train.py, compare.py and the verdict table read the
records below and nothing else of the modules.

Adding an experiment means adding its module, and two lines here: its import and its entry in
``EXPERIMENTS`` (whose order is that of ``train.py all``, of its list in ``train.py --help``, and of the
verdict table's rows).

Only a run of an experiment's preset is part of the committed record (``results/``, ``picture/``,
``docs/`` and the README's tables); ``Experiment.off_preset`` says how another run differs from it.

Below the registry, the results read back through it: ``load`` and ``load_experiments`` (each file
checked by its experiment's record and settings), and what the records make of them (``figures``,
``tables``, ``verdict_rows``, ``verdict_data``), for compare.py and verdicts.py.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

from experiments import (
    controls,
    conv,
    ddp,
    depth,
    float64,
    ics,
    landscape,
    lr,
    main,
    mnist,
    noisy,
    only_bn,
    residual,
    running_stats,
    scale,
    sweep,
)
from experiments.record import Experiment
from lab import stats
from lab.plotting import Figures
from lab.results import load_results, rounded
from lab.tidy import COLUMNS, cell, tidy_rows, to_csv
from lab.verdicts import Verdict, details, summary_table

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        main.EXPERIMENT,
        float64.EXPERIMENT,
        controls.EXPERIMENT,
        sweep.EXPERIMENT,
        ddp.EXPERIMENT,
        ics.EXPERIMENT,
        noisy.EXPERIMENT,
        landscape.EXPERIMENT,
        lr.EXPERIMENT,
        running_stats.EXPERIMENT,
        mnist.EXPERIMENT,
        conv.EXPERIMENT,
        depth.EXPERIMENT,
        scale.EXPERIMENT,
        only_bn.EXPERIMENT,
        residual.EXPERIMENT,
    )
}


# ----------------------------------------------------------------------------------------------
# Their results, read back: each checked by its record, then its figures, tables and verdict rows


def result_paths(root: Path) -> dict[str, Path]:
    return {name: e.results_path(root) for name, e in EXPERIMENTS.items()}


def load(name: str, path: Path) -> dict:
    """Experiment ``name``'s results at ``path``, checked by its record: their format, then what its figures need."""
    record = EXPERIMENTS[name]
    results = load_results(path, record.results_format, experiment=name, settings=record.settings)
    try:
        record.check(results)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return results


def load_experiments(root: Path, need_main: bool = True, notes: bool = True) -> dict[str, dict]:
    """The results of every experiment under ``root``, each checked by its record (its format, then
    what its figures need); the main one must be there if ``need_main``. ``notes``: one line on stderr
    for each experiment whose results are missing."""
    paths = result_paths(root)
    if not need_main and not any(path.exists() for path in paths.values()):
        raise ValueError(f"no results in {root}/ (train.py writes them there with --out {root})")
    experiments = {}
    for name, path in paths.items():
        if path.exists() or (name == "main" and need_main):
            experiments[name] = load(name, path)
        elif notes:
            print(f"note: no {path}: skipping its figures and tables (python train.py {name})", file=sys.stderr)
    for name in experiments if notes else ():
        missing = [n for n in EXPERIMENTS[name].needs if n not in experiments]
        if missing:
            print(f"note: the {name} figures and tables need the {missing[0]} results too: skipping them",
                  file=sys.stderr)
    return experiments


def figures(experiments: dict[str, dict]) -> dict[str, Figures]:
    """Experiment name -> its figures (file name -> function that draws it), for every experiment
    present with those it needs."""
    return {e.name: e.figures(*inputs) for e in EXPERIMENTS.values() if (inputs := e.inputs(experiments))}


def verdict_rows(experiments: dict[str, dict]) -> list[Verdict] | None:
    """The rows of the verdict table, in the registry's order; None unless every experiment that
    declares rows is there (with those it needs)."""
    deciding = [(e, e.inputs(experiments)) for e in EXPERIMENTS.values() if e.verdicts is not None]
    if not deciding or any(inputs is None for _, inputs in deciding):
        return None
    return [row for e, inputs in deciding for row in e.verdicts(*inputs)]


VERDICTS_FILE = "verdicts.json"  # beside the results: every part of every verdict, as data (compare.py writes it)


def verdict_data(rows: list[Verdict]) -> str:
    """The text of VERDICTS_FILE: each part of each row (row, part, budget, evaluation, statistic, test, n,
    interval, claim, margin, p-values, answer), floats to 6 significant digits, NaN and infinities as null."""
    def tidy(value):
        return None if isinstance(value, float) and not math.isfinite(value) else (
            rounded(value) if isinstance(value, float) else value)
    parts = [{k: tidy(v) for k, v in record.items()} for row in rows for record in row.records()]
    data = {"what": "every part of the README's verdict table, decided as lab/stats.py says", "alpha": stats.ALPHA,
            "family": "the parts of a row with a rule, by Holm's step-down; each direction one-sided at alpha",
            "parts": parts}
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


VERDICT_COLUMNS = ("row", "part", "budget", "evaluation", "statistic", "scale", "test", "n", "mean", "low", "high",
                   "median", "above", "ties", "below", "claim", "margin", "p_holds", "p_fails", "answer")
TIDY_FILE, VERDICTS_CSV = "results.csv", "verdicts.csv"  # beside each results.json; beside VERDICTS_FILE


def verdict_csv(rows: list[Verdict]) -> str:
    """The text of VERDICTS_CSV: VERDICTS_FILE's parts as a table, a row each (lab/tidy.py's cells)."""
    return to_csv(({k: cell(v) if isinstance(v, float) else v for k, v in record.items()}
                   for row in rows for record in row.records()), VERDICT_COLUMNS)


def tidy_data(experiments: dict[str, dict], folder: Path) -> dict[Path, str]:
    """Each experiment's results as one long-format CSV (lab/tidy.py), beside its results.json in ``folder``."""
    return {EXPERIMENTS[name].results_path(folder).with_name(TIDY_FILE):
            to_csv(tidy_rows(name, results, EXPERIMENTS[name].part and functools.partial(EXPERIMENTS[name].part,
                                                                                         results)), COLUMNS)
            for name, results in experiments.items()}


def read_verdicts(folder: Path) -> list[dict]:
    """The parts a folder's VERDICTS_FILE holds."""
    return json.loads((Path(folder) / VERDICTS_FILE).read_text(encoding="utf-8"))["parts"]


def tables(experiments: dict[str, dict], rows: list[Verdict] | None = None) -> dict[str, dict[str, str]]:
    """Experiment name -> its tables (marker name -> generated body), for every experiment present;
    and under "verdicts", the verdict table (a line per row, for the README) and every row whole (for its
    page, docs/verdicts.md), once every experiment with verdicts is there (``rows``: those ``verdict_rows``
    gave already, not made again)."""
    bodies = {e.name: e.tables(*inputs) for e in EXPERIMENTS.values() if (inputs := e.inputs(experiments))}
    rows = verdict_rows(experiments) if rows is None else rows
    if rows:
        bodies["verdicts"] = {"verdict-summary": summary_table(rows),  # the README's
                              "verdict-table": details(rows, lambda link: link.replace("](docs/", "]("))}  # its page's
    return bodies
