"""The results format: one ``results.json`` per experiment, written atomically, read back with checks,
and the queries that tables and figures ask of it.

A results file holds ``experiment``, the full ``config`` that produced it, the ``environment``, the
test ``datasets`` (one per range and seed) and the ``runs``: per (range, model, seed) the test MSE
before training and after every epoch, the training loss per step, the final predictions and,
where recorded, the diagnostics.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_FILE = "results.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` into a temporary file beside it, then rename.

    An interruption leaves the old file as it was, never half of a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the mode of a normal new file
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rounded(values, digits: int = 6):
    """Nested lists of floats to ``digits`` significant digits: plenty for figures, a third of the JSON."""
    if isinstance(values, list):
        return [rounded(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


def to_json(results: dict) -> str:
    """JSON with one line per top-level entry and per run or dataset: compact, yet diffable."""

    def entry(value) -> str:
        if isinstance(value, list):
            return "[\n" + ",\n".join(json.dumps(item, separators=(",", ":")) for item in value) + "\n]"
        return json.dumps(value)

    return "{\n" + ",\n".join(f"{json.dumps(key)}: {entry(value)}" for key, value in results.items()) + "\n}\n"


def save_results(results: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / RESULTS_FILE
    atomic_write(path, lambda tmp: tmp.write_text(to_json(results)))
    return path


def load_results(path: str | Path) -> dict:
    """Read a results.json; a clear ValueError if it is missing or not one."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no results at {path}: run `python train.py` first")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or not {"config", "runs", "datasets"} <= results.keys():
        raise ValueError(f"{path} is not a results file of train.py (no config/runs/datasets)")
    return results


# ----------------------------------------------------------------------------------------------
# Queries


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def ranges_of(results: dict) -> list[float]:
    return list(dict.fromkeys(run["range"][1] for run in results["runs"]))


def models_of(results: dict) -> list[str]:
    return list(dict.fromkeys(run["model"] for run in results["runs"]))


def runs_of(results: dict, r: float, model: str) -> list[dict]:
    return [run for run in results["runs"] if run["range"][1] == r and run["model"] == model]


def dataset_of(results: dict, r: float, seed: int) -> dict:
    return next(d for d in results["datasets"] if d["range"][1] == r and d["seed"] == seed)


def fit_spread(results: dict, run: dict) -> float:
    """std of a net's predictions over the test inputs ÷ std of the test targets: 0 is a constant fit."""
    data = dataset_of(results, run["range"][1], run["seed"])
    return (torch.tensor(run["predictions"]).std() / torch.tensor(data["y_test"]).std()).item()


def relative_gap(values: list[float], reference: list[float]) -> torch.Tensor:
    """|values − reference| / reference, element by element, in float64."""
    ref = torch.tensor(reference, dtype=torch.float64)
    return (torch.tensor(values, dtype=torch.float64) - ref).abs() / ref


def summarize(results: dict) -> list[dict]:
    """One row per (range, model): final test MSE mean ± std over seeds, and the noise floor."""
    floors = {}
    for d in results["datasets"]:
        floors.setdefault(d["range"][1], []).append(d["noise_std"] ** 2)
    finals: dict[tuple[float, str], list[float]] = {}
    for run in results["runs"]:
        finals.setdefault((run["range"][1], run["model"]), []).append(run["test_mse"][-1])
    rows = []
    for (r, model), values in finals.items():
        mean, std = mean_std(values)
        rows.append({"range": r, "model": model, "seeds": len(values), "mean": mean, "std": std,
                     "noise_floor": sum(floors[r]) / len(floors[r])})  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    """The summary as aligned text for the terminal."""
    lines = [f"{'range':<10} {'model':<12} {'seeds':>5}  {'final test MSE':>22}  {'noise floor':>11}"]
    for row in rows:
        rng = f"(-{row['range']:g}, {row['range']:g})"
        mse = f"{row['mean']:.4g} ± {row['std']:.2g}"
        lines.append(f"{rng:<10} {row['model']:<12} {row['seeds']:>5}  {mse:>22}  {row['noise_floor']:>11.4g}")
    return "\n".join(lines)
