"""Draw every figure of the README from saved results, and write its tables between marker comments.

    python compare.py                     # results/ -> picture/*.png and the tables in README.md
    python compare.py --results results/long --pictures picture/long --readme ''

Nothing is trained here: figures and tables come from the results.json files that train.py wrote,
OUT/results.json for the main experiment and OUT/NAME/results.json for the others; each experiment
(a module of experiments/) says which figures and tables it draws. The main results are required; a
missing other experiment skips its figures and tables.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import explanations
from config import build_parser, flag
from experiments import EXPERIMENTS
from plotting import Figures, pyplot
from results import atomic_write, load_results, unwritable


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str = flag("results", "directory of train.py's results (its --out)")
    pictures: str = flag("picture", "directory the figures are written to")
    readme: str = flag("README.md", "README whose generated tables are rewritten ('' to leave it alone)")


def load_experiments(root: Path) -> dict[str, dict]:
    """The results of every experiment under ``root``; the main one must be there."""
    experiments = {"main": load_results(root)}
    for name in EXPERIMENTS:
        path = root / name / "results.json"
        if name == "main":
            continue
        if path.exists():
            experiments[name] = load_results(path)
        else:
            print(f"note: no {path}: skipping its figures and tables (python train.py {name})", file=sys.stderr)
    for name in experiments:  # what an experiment needs of its results beyond their format
        getattr(EXPERIMENTS[name], "check", lambda _: None)(experiments)
    return experiments


def figures(experiments: dict[str, dict]) -> Figures:
    """File name -> function that draws it, for every experiment present."""
    return {name: draw for e in experiments for name, draw in EXPERIMENTS[e].figures(experiments).items()}


def tables(experiments: dict[str, dict]) -> dict[str, str]:
    """README marker name -> generated body, for every experiment present."""
    bodies = {name: body for e in experiments for name, body in EXPERIMENTS[e].tables(experiments).items()}
    return {**bodies, **explanations.tables(experiments)}  # the verdicts, once every experiment they read is there


def replace_between_markers(text: str, name: str, body: str) -> str:
    """Put ``body`` between <!-- name:start --> and <!-- name:end --> in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs exactly one '{start}' followed by one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


_TODO: Figures = {}  # what forked drawing processes draw, by name


def _draw(name: str, folder: str) -> None:
    _TODO[name](Path(folder) / name)


def write_pictures(todo: Figures, pictures: Path) -> list[Path]:
    """Draw every figure into a temporary directory first, then move them all into ``pictures``.

    Figures are drawn side by side in processes forked from this one, one per core (where the
    platform forks). An interruption while drawing leaves ``pictures`` exactly as it was.
    """
    pictures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pictures.parent, prefix=f".{pictures.name}.") as tmp:
        workers = min(len(todo), len(os.sched_getaffinity(0)))
        if workers > 1 and "fork" in mp.get_all_start_methods():
            pyplot()  # imported once here, not in every worker
            _TODO.clear()
            _TODO.update(todo)
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                list(pool.map(_draw, todo, [tmp] * len(todo)))
        else:
            for name, draw in todo.items():
                draw(Path(tmp) / name)
        written = []
        for name in todo:
            shutil.move(Path(tmp) / name, pictures / name)  # a rename: same filesystem
            written.append(pictures / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(CompareConfig, __doc__)
    config = CompareConfig(**vars(parser.parse_args(argv)))
    readme = Path(config.readme) if config.readme else None
    try:
        experiments = load_experiments(Path(config.results))
        todo = figures(experiments)
        bodies = tables(experiments)  # made even without a README: they check what the figures will read
        text = readme.read_text(encoding="utf-8") if readme else ""
        for name, body in bodies.items() if readme else ():
            text = replace_between_markers(text, name, body)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    problem = unwritable(Path(config.pictures))
    if problem:
        parser.error(f"argument --pictures: cannot write figures to {config.pictures!r}: {problem}")
    for path in write_pictures(todo, Path(config.pictures)):
        print(f"wrote {path}")
    if readme:
        atomic_write(readme, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"updated the tables in {readme}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: picture/ and the README are as they were")
