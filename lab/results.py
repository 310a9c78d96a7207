"""The results format: one ``results.json`` per experiment, written atomically and read back with checks
(the regression task's queries are lab/regression.py's).

A results file holds its ``format`` (``FORMAT``), ``experiment``, the ``config`` that produced it
(the settings the experiment read, and the value of those it fixes), the ``environment``, the test
``datasets`` (one per range and seed) and the ``runs``: per (range, model, seed) the test MSE before
training and after every epoch, the training loss per step, the final predictions and, where
recorded, the diagnostics.

It is strict JSON, which any language reads: a number that is not finite (a run that diverged) is
written as null, and read back as NaN. Every file is checked whole when it is read (``load_results``),
so that a hand-edited value is named, with its file and field, before any figure is drawn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from lab.settings import COMMITTED, RESULTS_FILE, check_values

# The version of that layout. Raise it whenever what compare.py reads changes, so that an older
# file is named as such instead of failing somewhere inside a figure. Files without it are 1.
FORMAT = 3  # 3: null for a number that is not finite (2 wrote NaN and Infinity, which strict JSON refuses)
TEXT_FIELDS = {"model", "optimizer", "activation"}  # the strings a record holds; every other leaf is a number (or null)
FLAG_FIELDS = {"diverged"}  # its booleans
ITEM_FIELDS = {"test_items", "train_mode_items", "precise_items"}  # which test items a run got right (pack_items)


@contextlib.contextmanager
def staged(path: Path, write: Callable[[Path], None]):
    """Write ``path``'s new content through ``write(tmp)`` into a temporary file beside it, then, when
    the block ends without an exception, rename it into place: several files can be written (each
    of which may fail, a full disk, say) before any of them replaces its old one.

    An interruption or a failure leaves the old file as it was, never half of a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the mode of a normal new file
    try:
        try:
            write(Path(tmp))
        except OSError as exc:
            if exc.filename not in (None, tmp):
                raise
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # the file, not its temporary twin
        yield
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` into a temporary file beside it, then rename (``staged``)."""
    with staged(path, write):
        pass


def unwritable_file(path: Path) -> str | None:
    """Why ``path`` could not be replaced by ``atomic_write``, or None if it can."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    return unwritable(path.parent)


def inside(path: Path | str, folder: Path | str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, once both are resolved."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def unwritable(folder: Path) -> str | None:
    """Why files could not be written into ``folder``, or None if they can. Creates nothing: a folder
    that does not exist yet is made when the first file is written."""
    existing = Path(folder)
    while not existing.exists() and existing.parent != existing:  # the nearest part of the path that exists
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def source(results: dict) -> str:
    """Where a results file was read from, as the tables cite it; for results not read from a file, where
    train.py wrote them: `OUT/results.json` for the main experiment, `OUT/NAME/results.json` for the others
    (OUT as its config records it)."""
    if READ_FROM in results:  # relative to the repository where it is inside it, whatever the working folder
        path, root = Path(results[READ_FROM]), Path(__file__).resolve().parent.parent  # lab/ is in the root
        return f"`{(path.resolve().relative_to(root) if inside(path, root) else path).as_posix()}`"
    out, name = results["config"].get("out") or COMMITTED, results["experiment"]
    return f"`{out}/{RESULTS_FILE}`" if name == "main" else f"`{out}/{name}/{RESULTS_FILE}`"


def rounded(values, digits: int = 6):
    """Nested lists of floats to ``digits`` significant digits: plenty for figures, a third of the JSON."""
    if isinstance(values, list):
        return [rounded(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


LONGER = "longer"  # {epochs: runs}: the runs of the longer budgets where a run's curves are as long as its training


def longer_runs(results: dict) -> dict[int, list[dict]]:
    """The runs of each longer budget kept apart from ``runs`` (``LONGER``), by their epochs; a ValueError
    where ``LONGER`` is not an object of epochs (digits) to non-empty lists of runs."""
    longer = results.get(LONGER, {})
    if not isinstance(longer, dict) or not all(isinstance(k, str) and k.isdigit() and isinstance(v, list) and v
                                               for k, v in longer.items()):
        raise ValueError(f"{LONGER!r} must map each longer budget's epochs to its non-empty list of runs")
    return {int(epochs): runs for epochs, runs in longer.items()}


def longer_lists(results: dict) -> dict[str, list[dict]]:
    """Each longer budget's runs under the name an error gives them (``longer.24``)."""
    return {f"{LONGER}.{epochs}": runs for epochs, runs in longer_runs(results).items()}


def budgets(results: dict) -> list[int]:
    """The training budgets (epochs) of an experiment whose runs record theirs: the settings' ``epochs``
    first, then the longer ones its deciding runs trained for too (in ``runs``, or in ``LONGER`` where a
    run's curves are as long as its training)."""
    first = results["config"]["epochs"]
    longer = {r["epochs"] for r in results["runs"] if "epochs" in r} | set(longer_runs(results))
    return [first, *sorted(longer - {first})]


def at_budget(results: dict, epochs: int) -> dict:
    """The results read at another budget: an experiment's readings see the runs of ``epochs`` epochs
    only (they read the runs of the settings' ``epochs``, which this replaces; from ``LONGER``, where
    those are)."""
    view = {**results, "config": {**results["config"], "epochs": epochs}}
    longer = longer_runs(results).get(epochs)
    return {**view, "runs": longer} if longer and epochs != results["config"]["epochs"] else view


def budget_runs(results: dict, model: str) -> list[dict]:
    """``model``'s runs at the budget read (the settings' ``epochs``; another: ``at_budget``), of an
    experiment whose runs record their epochs."""
    return [r for r in results["runs"] if r["model"] == model and r["epochs"] == results["config"]["epochs"]]


def pack_items(correct) -> str:
    """Which test items a net got right (a sequence of bools, in the test set's order) as a hex string:
    a leading 1 bit, then one bit per item, so the string says how many items it holds."""
    return format(int("1" + "".join("1" if c else "0" for c in correct), 2), "x")


def unpack_items(text: str) -> list[int]:
    """``pack_items`` undone: 1 for each item right, 0 for each wrong."""
    return [int(b) for b in bin(int(text, 16))[3:]]


def finite_or_none(value):
    """``value`` with every float that is not finite replaced by None, in nested lists and dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value


def none_to_nan(value):
    """The inverse, for reading records (whose leaves are numbers, strings and flags): None, a number
    that was not finite, becomes NaN."""
    if isinstance(value, list):
        return [none_to_nan(v) for v in value]
    if isinstance(value, dict):
        return {k: none_to_nan(v) for k, v in value.items()}
    return math.nan if value is None else value


def from_json(text: str) -> dict:
    """What ``to_json`` wrote, read back: in the records (every entry but the config and the
    environment), null, a number that was not finite, as NaN."""
    results = json.loads(text)
    if not isinstance(results, dict):
        return results
    return {k: v if k in ("config", "environment") else none_to_nan(v) for k, v in results.items()}


def to_json(results: dict) -> str:
    """Strict JSON with one line per top-level entry and per run or dataset: compact, yet diffable."""

    def entry(value) -> str:
        if isinstance(value, list):
            items = (json.dumps(item, separators=(",", ":"), allow_nan=False) for item in value)
            return "[\n" + ",\n".join(items) + "\n]"
        return json.dumps(value, allow_nan=False)

    results = finite_or_none(results)
    return "{\n" + ",\n".join(f"{json.dumps(key)}: {entry(value)}" for key, value in results.items()) + "\n}\n"


def save_results(results: dict, out_dir: str | Path) -> Path:
    """Write ``results`` as ``out_dir/results.json``, atomically, stamped with the format version."""
    path = Path(out_dir) / RESULTS_FILE
    results = {"format": FORMAT, **{key: value for key, value in results.items() if key != "format"}}
    atomic_write(path, lambda tmp: tmp.write_text(to_json(results)))
    return path


def load_results(path: str | Path, check: Callable[[dict], None] | None = None, experiment: str | None = None,
                 settings: type | None = None) -> dict:
    """Read a results.json; a clear ValueError if it is missing or not one. ``check``: what the
    experiment's records need (its record's ``results_format``; ``check_results``, the regression
    task's, by default); ``experiment``: the experiment whose results the file must hold; ``settings``:
    its settings class, which the recorded config must fit as the command line would take it, and
    ``choices`` the values some settings may take (``{"models": ...}``). The results remember the path
    they were read from (``source``)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no results at {path}: run `python train.py` first")
    try:
        results = from_json(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or not {"config", "runs", "datasets"} <= results.keys():
        raise ValueError(f"{path} is not a results file of train.py (no config/runs/datasets)")
    version = results.get("format", 1)
    if version != FORMAT:
        if isinstance(version, int) and version > FORMAT:
            raise ValueError(f"{path} was written by a newer version (format {version}; this one reads {FORMAT})")
        raise ValueError(f"{path} was written by an earlier version (format {version!r}, now {FORMAT}): rerun train.py")
    try:
        if not isinstance(results["config"], dict):
            raise ValueError("'config' must be an object")
        if experiment is not None and results.get("experiment", "main") != experiment:
            raise ValueError(f"it holds the {results.get('experiment')} experiment's results, not the {experiment} "
                             f"experiment's (OUT/results.json is main's, OUT/NAME/results.json NAME's)")
        if settings is not None:
            check_values(settings, results["config"])
        check_records(results)
        check_consistent(results)
        (check or check_results)(results)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    results[READ_FROM] = str(path)
    return results


READ_FROM = "read_from"  # the key where load_results leaves the path it read


def check_consistent(results: dict) -> None:
    """Raise ValueError where the records contradict the config or cannot be measurements: seeds given
    twice, a run recorded twice, curves of another length than the epochs make, a negative loss or
    mean squared error, an accuracy outside [0, 1]."""
    config, runs, seen = results["config"], results.get("runs"), {}
    seeds, epochs = config.get("seeds"), config.get("epochs")
    if isinstance(seeds, list) and len(set(map(str, seeds))) != len(seeds):
        raise ValueError(f"config: 'seeds' names a seed twice: {seeds}")
    for i, run in enumerate(runs if isinstance(runs, list) else []):
        if not isinstance(run, dict):  # the experiment's own format check names it
            continue
        key = json.dumps(run, sort_keys=True, default=str)
        if key in seen:
            raise ValueError(f"runs[{i}] is runs[{seen[key]}] again: a run recorded twice")
        seen[key], curve = i, run.get("test_mse")
        if isinstance(epochs, int) and isinstance(curve, list) and len(curve) != epochs + 1:
            raise ValueError(f"runs[{i}].test_mse: {len(curve)} values, where {epochs} epochs give {epochs + 1} "
                             "(one before training, one after each epoch)")
        for field, high in (("test_mse", math.inf), ("train_loss", math.inf), ("loss", math.inf), ("test_acc", 1),
                            ("train_acc", 1), ("train_mode_acc", 1)):
            values = run.get(field) if isinstance(run.get(field), list) else [run.get(field)]
            bad = [v for v in values if _number(v) and not math.isnan(v) and not 0 <= v <= high]  # NaN: diverged
            if bad:
                raise ValueError(f"runs[{i}].{field}: {bad[0]!r} is not a possible value (from 0 to {high})")


def check_records(results: dict) -> None:
    """Raise ValueError naming the first field of a record (a run, a dataset, ...: the objects of the
    top-level lists) that holds what no figure can read: a leaf that is not a number (or null) where
    numbers go, a seed no generator takes, a ragged list, or a shape unlike the first record's."""
    lists = {**results, **longer_lists(results)}  # each longer budget's runs: a list of records of their own
    for key, records in lists.items():
        if not (isinstance(records, list) and records and all(isinstance(r, dict) for r in records)):
            continue
        for i, record in enumerate(records):
            _check_leaves(record, f"{key}[{i}]")
        first = _shape(records[0])
        for i, record in enumerate(records[1:], 1):
            difference = _first_difference(first, _shape(record), f"{key}[{i}]")
            if difference:
                raise ValueError(f"{difference} (unlike {key}[0]: all {key} must have one shape)")


def _check_items(value, where: str) -> None:
    """A ``pack_items`` string, or a mapping of them (by step)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_items(v, f"{where}.{k}")
    elif not (isinstance(value, str) and len(value) > 0 and all(c in "0123456789abcdef" for c in value)):
        raise ValueError(f"{where}: expected which test items it got right (a hex string), got {value!r}")


def _check_leaves(value, where: str, key: str | None = None) -> None:
    if key in ITEM_FIELDS:
        _check_items(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_leaves(v, f"{where}.{k}", k)
    elif isinstance(value, list):
        lengths = {len(v) for v in value if isinstance(v, list)}
        if len(lengths) > 1 or (lengths and not all(isinstance(v, list) for v in value)):
            raise ValueError(f"{where}: a ragged list (its items must all be lists of one length, or all not)")
        for i, v in enumerate(value):
            _check_leaves(v, f"{where}[{i}]", key)
    elif key in TEXT_FIELDS:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
    elif key in FLAG_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
    elif key == "seed":
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64):
            raise ValueError(f"{where}: expected a generator seed (an integer from 0 to 2**64 - 1), got {value!r}")
    elif not _number(value):  # NaN included: a number that was not finite (null in the file)
        raise ValueError(f"{where}: expected a number, got {value!r}")


def _shape(value):
    """What a record looks like: its keys, its lists' lengths, and the kind of each leaf."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", len(value), _shape(value[0]) if value else None]
    return "text" if isinstance(value, str) else "flag" if isinstance(value, bool) else "number"


def _first_difference(expected, actual, where: str) -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            missing, extra = sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys())
            return f"{where}: " + "; ".join([*(f"no {k!r}" for k in missing), *(f"an extra {k!r}" for k in extra)])
        return next(filter(None, (_first_difference(expected[k], actual[k], f"{where}.{k}") for k in expected)), None)
    if isinstance(expected, list) and isinstance(actual, list):
        if expected[1] != actual[1]:
            return f"{where}: {actual[1]} items, where the first record has {expected[1]}"
        return None if expected[2] is None else _first_difference(expected[2], actual[2], f"{where}[0]")
    return None if expected == actual else f"{where}: a {_kind(actual)} where the first record has a {_kind(expected)}"


def _kind(shape) -> str:
    return "list" if isinstance(shape, list) else "object" if isinstance(shape, dict) else shape


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value, length: int | None = None) -> bool:
    """A list of numbers (of ``length`` numbers, if given)."""
    ok = isinstance(value, list) and all(_number(v) for v in value)
    return ok and (length is None or len(value) == length)


def _range_of(item: dict, where: str) -> float:
    rng = item.get("range")
    if not (_numbers(rng, 2) and rng[1] > 0 and rng[0] == -rng[1]):
        raise ValueError(f"{where}: 'range' must be [-R, R] with R > 0, got {rng!r}")
    return rng[1]


def check_results(results: dict) -> None:
    """Raise ValueError naming the first thing in ``results`` that the figures and tables cannot use
    (after ``check_values`` and ``check_records``: here, what the regression task's records need)."""
    config = results["config"]
    for key in ("seeds", "epochs", "a", "b", "dtype", "noise_scaled", "models"):
        if key not in config:
            raise ValueError(f"config: {key!r} is missing")
    datasets, runs = results["datasets"], results["runs"]
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise ValueError("'datasets' must be a list of objects")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError("'runs' must be a non-empty list of objects")
    sizes = {}
    for i, d in enumerate(datasets):
        where = f"datasets[{i}]"
        r = _range_of(d, where)
        if not isinstance(d.get("seed"), int) or not (_number(d.get("noise_std")) and d["noise_std"] >= 0):
            raise ValueError(f"{where}: needs an integer 'seed' and a non-negative 'noise_std'")
        if not (_numbers(d.get("x_test")) and d["x_test"] and _numbers(d.get("y_test"), len(d["x_test"]))):
            raise ValueError(f"{where}: 'x_test' and 'y_test' must be lists of numbers of one length")
        sizes[r, d["seed"]] = len(d["x_test"])
    with_diagnostics = "diagnostics" in runs[0]
    for i, run in enumerate(runs):
        where = f"runs[{i}]"
        r = _range_of(run, where)
        if run.get("model") not in config["models"]:
            known = ", ".join(config["models"])
            raise ValueError(f"{where}: unknown model {run.get('model')!r}; the config's models: {known}")
        if (r, run.get("seed")) not in sizes:
            raise ValueError(f"{where}: no dataset for range {r:g} and seed {run.get('seed')!r}")
        for key, length in (("test_mse", None), ("train_loss", None), ("predictions", sizes[r, run["seed"]])):
            if not (_numbers(run.get(key), length) and run[key]):
                count = f" ({length} of them)" if length else ""
                raise ValueError(f"{where}: {key!r} must be a non-empty list of numbers{count}")
        if ("diagnostics" in run) != with_diagnostics:
            raise ValueError(f"{where}: some runs have diagnostics and others not")
        if with_diagnostics:
            _check_diagnostics(run["diagnostics"], f"{where}.diagnostics")
    for r in dict.fromkeys(run["range"][1] for run in runs):
        if (r, config["seeds"][0]) not in sizes:
            raise ValueError(f"no dataset for range {r:g} and the first seed of the config, {config['seeds'][0]}")


def _check_diagnostics(diag, where: str) -> None:
    if not isinstance(diag, dict) or not _numbers(diag.get("step")) or not diag["step"]:
        raise ValueError(f"{where}: needs a non-empty 'step' list")
    records = len(diag["step"])
    for key in ("saturation", "grad_norm", "unit_q", "layer_q"):
        value = diag.get(key)
        if not (isinstance(value, list) and len(value) == records and all(isinstance(v, list) and v for v in value)):
            raise ValueError(f"{where}: {key!r} must hold one list per step")
    if not (_numbers(diag.get("quantiles")) and isinstance(diag.get("unit"), int)):
        raise ValueError(f"{where}: needs 'quantiles' and 'unit'")

