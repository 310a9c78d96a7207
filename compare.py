"""Draw every figure of the README from saved results, and write its tables between marker comments.

    python compare.py                     # results/ -> picture/*.png and the README's tables;
                                          # then runs/, if train.py put any there -> runs/picture/, runs/tables.md
    python compare.py --results runs/long # -> runs/long/picture/*.png and runs/long/tables.md

Nothing is trained here: figures and tables come from the results.json files that train.py wrote,
OUT/results.json for the main experiment and OUT/NAME/results.json for the others; each experiment
(a module of experiments/) says which figures and tables it draws. Only the experiments' own presets
(results/) reach picture/ and the README; any other folder's figures go to FOLDER/picture/ and its
tables to FOLDER/tables.md. In results/ the main results are required; a missing other experiment
skips its figures and tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import explanations
from config import COMMITTED, RESULTS_FILE, TRIALS, build_parser, flag
from experiments import EXPERIMENTS, off_preset
from plotting import Figures, pyplot
from results import inside, load_results, staged, unwritable, unwritable_file
from training import process_pool, stop_signals_as_interrupt

ROOT = Path(__file__).resolve().parent
PICTURES, README = "picture", "README.md"  # the committed figures and README: the presets' results only


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str | None = flag(
        None, f"directory of train.py's results (its --out; default: {COMMITTED}/, then {TRIALS}/ if it has any)"
    )
    pictures: str | None = flag(None, f"directory the figures are written to (default: {PICTURES}/ for {COMMITTED}/, "
                                      "RESULTS/picture/ for any other folder)")  # fmt: skip
    readme: str | None = flag(None, f"README whose generated tables are rewritten (default: {README} for {COMMITTED}/; "
                                    "for any other folder RESULTS/tables.md, written whole; '' for none)")  # fmt: skip



def result_paths(root: Path) -> dict[str, Path]:
    return {name: root / RESULTS_FILE if name == "main" else root / name / RESULTS_FILE for name in EXPERIMENTS}


def load_experiments(root: Path, need_main: bool = True) -> dict[str, dict]:
    """The results of every experiment under ``root``; the main one must be there if ``need_main``."""
    paths = result_paths(root)
    if not need_main and not any(path.exists() for path in paths.values()):
        raise ValueError(f"no results in {root}/ (train.py writes them there with --out {root})")
    experiments = {}
    for name, path in paths.items():
        if path.exists() or (name == "main" and need_main):
            experiments[name] = load_results(path)
        else:
            print(f"note: no {path}: skipping its figures and tables (python train.py {name})", file=sys.stderr)
    for name in experiments:  # what an experiment needs of its results beyond their format
        try:
            getattr(EXPERIMENTS[name], "check", lambda _: None)(experiments)
        except ValueError as exc:
            raise ValueError(f"{paths[name]}: {exc}") from None
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
DRAWING = ".drawing-"  # the temporary folder inside the pictures' folder that figures are drawn into


def _draw(name: str, folder: str) -> None:
    try:
        _TODO[name](Path(folder) / name)
    except OSError as exc:  # a full disk: the error names no file (a write's does not)
        raise OSError(exc.errno, exc.strerror, name) from exc


def write_pictures(todo: Figures, pictures: Path) -> list[Path]:
    """Draw every figure into a temporary folder inside ``pictures`` first, then move them all into
    ``pictures`` (its parent need not be writable).

    Figures are drawn side by side in processes forked from this one, one per core (where the
    platform forks). An interruption or a failure (a full disk) while drawing leaves ``pictures``
    exactly as it was.
    """
    pictures.mkdir(parents=True, exist_ok=True)
    _TODO.clear()
    _TODO.update(todo)
    with tempfile.TemporaryDirectory(dir=pictures, prefix=DRAWING) as tmp:
        workers = min(len(todo), len(os.sched_getaffinity(0)))
        try:
            if workers > 1 and "fork" in mp.get_all_start_methods():
                pyplot()  # imported once here, not in every worker
                with process_pool(workers) as pool_map:
                    list(pool_map(_draw, todo, [tmp] * len(todo)))
            else:
                for name in todo:
                    _draw(name, tmp)
        except OSError as exc:
            if exc.filename not in todo:  # not a figure's: as it came
                raise
            raise OSError(exc.errno, exc.strerror, str(pictures / exc.filename)) from exc
        written = []
        for name in todo:
            os.replace(Path(tmp) / name, pictures / name)  # a rename, in one folder's subfolder
            written.append(pictures / name)
    return written


def trials_table_file(folder: Path, bodies: dict[str, str]) -> str:
    """The text of FOLDER/tables.md: every generated table of a folder's results, under its name."""
    head = (f"# Tables of the results in {folder}/\n\nWritten by compare.py from {folder}/: a configuration of "
            f"your own, not the committed record ({COMMITTED}/, whose tables are in the README). The figures are "
            "in picture/ beside this file.\n")  # fmt: skip
    return head + "".join(f"\n## {name}\n\n{body}\n" for name, body in bodies.items())


def draw(parser: argparse.ArgumentParser, config: CompareConfig) -> None:
    """Draw one results folder's figures and write its tables, as ``config`` says."""
    results = Path(config.results)
    committed = results.resolve() == (ROOT / COMMITTED).resolve()
    pictures = Path(config.pictures if config.pictures is not None else PICTURES if committed else results / "picture")
    readme_name = config.readme if config.readme is not None else README if committed else str(results / "tables.md")
    readme = Path(readme_name) if readme_name else None
    whole = readme is not None and config.readme is None and not committed  # a tables file of its own
    try:
        experiments = load_experiments(results, need_main=committed)
        record = [inside(pictures, ROOT / PICTURES), readme is not None and inside(readme, ROOT / README)]
        for name, r in experiments.items() if any(record) else ():
            differ = off_preset(name, r["config"])
            if differ:
                raise ValueError(f"{result_paths(results)[name]} is not the {name} preset's run ({', '.join(differ)}): "
                                 f"only the presets' results reach {PICTURES}/ and {README} (draw it with "
                                 f"--pictures and --readme elsewhere)")  # fmt: skip
        todo = figures(experiments)
        bodies = tables(experiments)  # made even without a README: they check what the figures will read
        if whole:
            text = trials_table_file(results, bodies)
        else:
            text = readme.read_text(encoding="utf-8") if readme else ""
            for name, body in bodies.items() if readme else ():
                text = replace_between_markers(text, name, body)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"cannot read {exc.filename}: {exc.strerror or exc}")
    problem = unwritable(pictures)
    if problem:
        parser.error(f"argument --pictures: cannot write figures to {str(pictures)!r}: {problem}")
    problem = readme and unwritable_file(readme)
    if problem:
        parser.error(f"argument --readme: cannot write {str(readme)!r}: {problem}")
    kept = f"{pictures}/ and {readme} are as they were" if readme else f"{pictures}/ is as it was"
    try:
        # The README's new text is written first and renamed into place last, once every figure is in
        # place: a full disk or a stop on the way leaves figures and README as they were, together.
        with staged(readme, lambda tmp: tmp.write_text(text, encoding="utf-8")) if readme else contextlib.nullcontext():
            for path in write_pictures(todo, pictures):
                print(f"wrote {path}")
    except OSError as exc:
        sys.exit(f"compare.py: cannot write {exc.filename} ({exc.strerror or exc}): {kept}")
    if readme:
        print(f"wrote {readme}" if whole else f"updated the tables in {readme}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(CompareConfig, __doc__)
    config = CompareConfig(**vars(parser.parse_args(argv)))
    if config.results is not None:
        draw(parser, config)
        return 0
    draw(parser, dataclasses.replace(config, results=COMMITTED))
    if any(path.exists() for path in result_paths(Path(TRIALS)).values()):  # runs of other configurations
        draw(parser, CompareConfig(results=TRIALS))
    return 0


if __name__ == "__main__":
    try:
        with stop_signals_as_interrupt():
            sys.exit(main())
    except KeyboardInterrupt as exc:
        why = f"stopped by {exc.args[0]}" if exc.args else "interrupted"
        sys.exit(f"{why}: the figures and tables it was writing are as they were")
