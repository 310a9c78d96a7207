"""Draw every figure from saved results, and write every generated table between marker comments.

    python compare.py                     # results/ -> picture/*.png, docs/NAME.md's tables, the README's;
                                          # then runs/, if train.py put any there -> runs/picture/, runs/tables.md
    python compare.py --results runs/long # -> runs/long/picture/*.png and runs/long/tables.md

Nothing is trained here: figures and tables come from the results.json files that train.py wrote,
OUT/results.json for the main experiment and OUT/NAME/results.json for the others; each experiment's
record (experiments/NAME.py) says which figures and tables it draws. Each experiment's tables go into
its page docs/NAME.md (made, with its docstring, figures and markers, where it has none), the verdict
table and the list of experiments into the README. Only the experiments' own presets (results/) reach
picture/, docs/ and the README; any other folder's figures go to FOLDER/picture/ and all its tables
to FOLDER/tables.md. In results/ the main results are required; a missing other experiment skips its
figures and tables.
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
import numerics
from bn_pytorch import VARIANTS
from config import COMMITTED, TRIALS, build_parser, flag
from experiments import EXPERIMENTS
from plotting import Figures, pyplot
from results import inside, load_results, staged, unwritable, unwritable_file
from training import process_pool, stop_signals_as_interrupt

ROOT = Path(__file__).resolve().parent
PICTURES, README, DOCS = "picture", "README.md", "docs"  # the committed figures, README and pages: presets only


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str | None = flag(
        None, f"directory of train.py's results (its --out; default: {COMMITTED}/, then {TRIALS}/ if it has any)"
    )
    pictures: str | None = flag(None, f"directory the figures are written to (default: {PICTURES}/ for {COMMITTED}/, "
                                      "RESULTS/picture/ for any other folder)")  # fmt: skip
    readme: str | None = flag(None, f"README whose generated tables are rewritten: the verdict table, and with no "
                                    f"docs folder every table (default: {README} for {COMMITTED}/; for any other "
                                    "folder RESULTS/tables.md, written whole; '' for none)")  # fmt: skip
    docs: str | None = flag(None, f"folder of the experiments' pages, NAME.md, whose generated tables are rewritten "
                                  f"(made where missing) (default: {DOCS}/ for {COMMITTED}/ with the default README; "
                                  "none otherwise)")  # fmt: skip



def result_paths(root: Path) -> dict[str, Path]:
    return {name: e.results_path(root) for name, e in EXPERIMENTS.items()}


def load(name: str, path: Path) -> dict:
    """Experiment ``name``'s results at ``path``, checked by its record: their format, then what its figures need."""
    results = load_results(path, EXPERIMENTS[name].results_format, {"models": tuple(VARIANTS)}, experiment=name)
    try:
        EXPERIMENTS[name].check(results)
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


def verdict_rows(experiments: dict[str, dict]) -> list[explanations.Verdict] | None:
    """The rows of the verdict table, in the registry's order; None unless every experiment that
    declares rows is there (with those it needs)."""
    deciding = [(e, e.inputs(experiments)) for e in EXPERIMENTS.values() if e.verdicts is not None]
    if not deciding or any(inputs is None for _, inputs in deciding):
        return None
    return [row for e, inputs in deciding for row in e.verdicts(*inputs)]


def tables(experiments: dict[str, dict]) -> dict[str, dict[str, str]]:
    """Experiment name -> its tables (marker name -> generated body), for every experiment present;
    and under "verdicts", the verdict table, once every experiment with verdicts is there."""
    bodies = {e.name: e.tables(*inputs) for e in EXPERIMENTS.values() if (inputs := e.inputs(experiments))}
    rows = verdict_rows(experiments)
    if rows:
        bodies["verdicts"] = {"verdict-table": explanations.verdict_table(rows)}
    return bodies


def replace_between_markers(text: str, name: str, body: str, where: str = "the README") -> str:
    """Put ``body`` between <!-- name:start --> and <!-- name:end --> in ``text`` (the text of ``where``)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{where} needs exactly one '{start}' followed by one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def new_page(name: str, bodies: dict[str, str], figures_: list[str], pictures: Path, docs: Path) -> str:
    """An experiment's page where it has none yet: its docstring, its figures and its tables' markers
    (compare.py fills them; what is written around them stays when it runs again)."""
    record = EXPERIMENTS[name]
    links = [f"![{f}]({Path(os.path.relpath(pictures / f, docs)).as_posix()})" for f in figures_]
    text = f"# {name}\n\n{record.doc.strip()}\n\n" + "".join(f"{link}\n\n" for link in links)
    return text + "".join(f"<!-- {marker}:start -->\n<!-- {marker}:end -->\n\n" for marker in bodies).rstrip() + "\n"


def experiments_table(readme: Path, docs: Path) -> str:
    """The README's list of experiments, from the registry: each one's page, question and command."""
    lines = ["| experiment | what it asks | run it |", "|---|---|---|"]
    for e in EXPERIMENTS.values():
        page = Path(os.path.relpath(docs / f"{e.name}.md", readme.parent)).as_posix()
        question = e.first_sentence()
        lines.append(f"| [{e.name}]({page}) | {question[:1].upper() + question[1:]} | `python train.py {e.name}` |")
    return "\n".join(lines)


def texts(bodies: dict[str, dict[str, str]], readme: Path | None, docs: Path | None, pictures: Path,
          drawn: dict[str, Figures]) -> dict[Path, str]:  # fmt: skip
    """The files the tables go into, with their new text: each experiment's tables into its page
    DOCS/NAME.md (made from ``new_page`` where it is missing) and the verdict table into the README, or
    with no ``docs``, every table into the README."""
    out: dict[Path, str] = {}

    def fill(path: Path, tables_: dict[str, str], text: str | None = None) -> None:
        text = out.get(path, text if text is not None else path.read_text(encoding="utf-8"))
        for marker, body in tables_.items():
            text = replace_between_markers(text, marker, body, "the README" if path == readme else str(path))
        out[path] = text

    if docs is not None and readme is not None:
        fill(readme, {"experiments-table": experiments_table(readme, docs)})
    for name, tables_ in bodies.items():
        if docs is None or name == "verdicts":
            if readme is not None:
                fill(readme, tables_)
            continue
        page = docs / f"{name}.md"
        fill(page, tables_, None if page.exists() else new_page(name, tables_, list(drawn[name]), pictures, docs))
    return out


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


def trials_table_file(folder: Path, bodies: dict[str, dict[str, str]]) -> str:
    """The text of FOLDER/tables.md: every generated table of a folder's results, under its name."""
    head = (f"# Tables of the results in {folder}/\n\nWritten by compare.py from {folder}/: a configuration of "
            f"your own, not the committed record ({COMMITTED}/, whose tables are in the README). The figures are "
            "in picture/ beside this file.\n")  # fmt: skip
    return head + "".join(f"\n## {name}\n\n{body}\n" for tables_ in bodies.values() for name, body in tables_.items())


def draw(parser: argparse.ArgumentParser, config: CompareConfig) -> None:
    """Draw one results folder's figures and write its tables, as ``config`` says."""
    results = Path(config.results)
    committed = results.resolve() == (ROOT / COMMITTED).resolve()
    pictures = Path(config.pictures if config.pictures is not None else PICTURES if committed else results / "picture")
    readme_name = config.readme if config.readme is not None else README if committed else str(results / "tables.md")
    readme = Path(readme_name) if readme_name else None
    docs_name = config.docs if config.docs is not None else DOCS if committed and config.readme is None else ""
    docs = Path(docs_name) if docs_name else None
    whole = readme is not None and config.readme is None and not committed  # a tables file of its own
    try:
        experiments = load_experiments(results, need_main=committed)
        record = [inside(pictures, ROOT / PICTURES), readme is not None and inside(readme, ROOT / README),
                  docs is not None and inside(docs, ROOT / DOCS)]  # fmt: skip
        for name, r in experiments.items() if any(record) else ():
            differ = EXPERIMENTS[name].off_preset(r["config"])
            if differ:
                raise ValueError(f"{result_paths(results)[name]} is not the {name} preset's run ({', '.join(differ)}): "
                                 f"only the presets' results reach {PICTURES}/, {DOCS}/ and {README} (draw it with "
                                 f"--pictures, --docs and --readme elsewhere)")  # fmt: skip
        drawn = figures(experiments)
        todo = {file: draw_ for figures_ in drawn.values() for file, draw_ in figures_.items()}
        bodies = tables(experiments)  # made even without a README: they check what the figures will read
        if whole:
            new = {readme: trials_table_file(results, bodies)}
        else:
            new = texts(bodies, readme, docs, pictures, drawn)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"cannot read {exc.filename}: {exc.strerror or exc}")
    problem = unwritable(pictures)
    if problem:
        parser.error(f"argument --pictures: cannot write figures to {str(pictures)!r}: {problem}")
    for path in new:
        problem = unwritable_file(path) if path.exists() or path == readme else unwritable(path.parent)
        if problem:
            flag_ = "--readme" if path == readme else "--docs"
            parser.error(f"argument {flag_}: cannot write {str(path)!r}: {problem}")
    files = [str(path) for path in new if docs is None or path.parent != docs] + ([f"{docs}/"] if docs else [])
    kept = f"{pictures}/ and {' and '.join(files)} are as they were" if new else f"{pictures}/ is as it was"
    try:
        # The tables' new texts are written first and renamed into place last, once every figure is in
        # place: a full disk or a stop on the way leaves figures, README and pages as they were, together.
        with contextlib.ExitStack() as stack:
            for path, text in new.items():
                stack.enter_context(staged(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
            for path in write_pictures(todo, pictures):
                print(f"wrote {path}")
    except OSError as exc:
        sys.exit(f"compare.py: cannot write {exc.filename} ({exc.strerror or exc}): {kept}")
    for path in new:
        print(f"wrote {path}" if whole else f"updated the tables in {path}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(CompareConfig, __doc__)
    config = CompareConfig(**vars(parser.parse_args(argv)))
    numerics.apply()  # the tables' statistics, computed as train.py's runs were
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
