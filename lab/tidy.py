"""The results as tidy data: one long-format CSV per experiment, a row per measured number, and one for the
verdicts, a row per part; compare.py writes them beside the results they come from.

An experiment's results.json holds its runs as nested records, each experiment in its own shape; the CSV
flattens them into the same columns for every experiment:

- ``experiment``, and ``part``: which part of the experiment's design the run belongs to (the conv net's
  grid, its learning-rate sweep, ...; ``longer budget`` for the runs an experiment trains again for
  longer; the record's own ``part``, where it declares one);
- the run's setting, a column each, those the experiment has: ``range`` (R, the inputs in (-R, R)),
  ``optimizer``, ``lr``, ``batch_size``, ``budget`` (the epochs it trained), ``activation``, ``width``,
  ``depth`` (a residual net's blocks), ``factor``, ``weight_decay``;
- ``net`` and ``seed``;
- ``axis`` and ``index``: where along the run the number was measured: ``epoch`` (0: before training),
  ``step`` (training steps taken), ``block`` (a deep net's block, from 1) or ``end`` (once, at the end;
  ``index`` empty);
- ``metric`` and ``value``. A measure recorded per block (per layer, per quantile) is a metric each:
  ``diagnostics.saturation[2]`` is block 2's (counted from 1).

Left in results.json alone, which the tables and verdicts read but a CSV row each would make ten times
larger: each step's training loss, each test input's prediction, which test items each run got right
(packed), what the probes record per block every few steps (``diagnostics``, ``ics``), and the residual nets'
measurements at initialisation (``initialisation``, by block).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator

from lab.results import longer_runs, rounded

SETTING = {"range": "range", "optimizer": "optimizer", "lr": "lr", "batch_size": "batch_size", "epochs": "budget",
           "activation": "activation", "width": "width", "depth": "depth", "factor": "factor",
           "weight_decay": "weight_decay"}
LEFT = {"train_loss", "predictions", "step", "model", "seed", "every", "blocks", "quantiles", "unit", "factors",
        "base", "alpha", "diagnostics", "ics"}  # kept in results.json alone (or read here as an axis)
COLUMNS = ("experiment", "part", *dict.fromkeys(SETTING.values()), "net", "seed", "axis", "index", "metric", "value")
BLOCK_AXIS = {"erank", "grad_sq"}  # a deep net's measure per block, not per epoch


def setting(run: dict) -> dict:
    """The run's setting, as the CSV's columns: R for a range (-R, R)."""
    out = {column: run[key] for key, column in SETTING.items() if key in run}
    if "range" in out:
        out["range"] = out["range"][1]
    return out


def measures(record: dict, prefix: str = "") -> Iterator[tuple[str, str | int, str, float]]:
    """(axis, index, metric, value) of every number of one run's record: its scalars at the end, its curves
    along epochs, steps (a record with a ``step`` list) or blocks, a list of lists a metric per inner entry."""
    steps = record.get("step") if isinstance(record.get("step"), list) else None
    for key, value in record.items():
        if key in LEFT or key in SETTING or key.endswith("items"):
            continue
        name = prefix + key
        if isinstance(value, dict):
            yield from measures(value, name + ".")
        elif isinstance(value, (int, float)) or value is None:  # a bool too
            yield "end", "", name, value
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            inner = len(value[0])
            for j in range(inner):
                yield from curve([v[j] for v in value], f"{name}[{j + 1}]", key, steps)
        elif isinstance(value, list):
            yield from curve(value, name, key, steps)


def curve(values: list, name: str, key: str, steps: list | None) -> Iterator[tuple[str, str | int, str, float]]:
    if any(isinstance(v, list) for v in values):  # deeper than this file goes: results.json alone
        return
    if key in BLOCK_AXIS:
        axis, index = "block", range(1, len(values) + 1)
    elif steps is not None and len(steps) == len(values):
        axis, index = "step", steps
    elif steps is not None and len(steps) == len(values) + 1:  # measured between records (mnist's ICS)
        axis, index = "step", steps[1:]
    else:
        axis, index = "epoch", range(len(values))
    for i, v in zip(index, values, strict=True):
        yield axis, i, name, v


def tidy_rows(name: str, results: dict, part: Callable[[dict], str] | None = None) -> Iterator[dict]:
    """Every row of experiment ``name``'s CSV: its runs (``part(run)`` naming each one's part of the design),
    then any trained again for longer (``lab.results.longer_runs``: budget -> runs)."""
    groups = [(run, part(run) if part else "") for run in results["runs"]]
    for budget, runs in sorted(longer_runs(results).items()):
        groups += [({**run, "epochs": budget}, "longer budget") for run in runs]
    for run, which in groups:
        head = {"experiment": name, "part": which, **setting(run), "net": run.get("model", ""),
                "seed": run.get("seed", "")}
        for axis, index, metric, value in measures(run):
            yield {**head, "axis": axis, "index": index, "metric": metric, "value": cell(value)}


def cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return repr(rounded(float(value))) if isinstance(value, float) else str(value)


def to_csv(rows: Iterator[dict], columns: tuple[str, ...]) -> str:
    """The CSV's text: the columns that any row fills, in ``columns``' order; \\n line ends."""
    rows = list(rows)
    used = [c for c in columns if any(c in row for row in rows)]
    out = io.StringIO()
    writer = csv.DictWriter(out, used, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
