"""Draw every figure from saved results, and write every generated table between marker comments.

    python compare.py                     # results/ -> picture/*.png, docs/NAME.md's tables, the README's;
                                          # then runs/, if train.py put any there -> runs/picture/, runs/tables.md
    python compare.py --results runs/long # -> runs/long/picture/*.png and runs/long/tables.md

Nothing is trained here: figures and tables come from the results.json files that train.py wrote,
OUT/results.json for the main experiment and OUT/NAME/results.json for the others; each experiment's
record (experiments/NAME.py) says which figures and tables it draws. Each experiment's tables go into
its page docs/NAME.md (made, with its docstring, figures and markers, where it has none); the verdict
table (a line per row) and the list of experiments into the README; every row of the verdict table whole
into docs/verdicts.md, the experiments' questions into docs/runs.md, and every verdict part as a picture
(lab/forest.py) into picture/verdicts.png. Only the experiments' own presets (results/) reach
picture/, docs/ and the README; any other folder's figures go to FOLDER/picture/ and all its tables
to FOLDER/tables.md. In results/ the main results are required; a missing other experiment skips its
figures and tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import (
    EXPERIMENTS,
    VERDICTS_CSV,
    VERDICTS_FILE,
    figures,
    load_experiments,
    result_paths,
    tables,
    tidy_data,
    verdict_csv,
    verdict_data,
    verdict_rows,
)
from lab import numerics
from lab.forest import plot_verdicts
from lab.pages import replace_between_markers, table, write_pictures
from lab.plotting import Figures
from lab.results import inside, staged, unwritable, unwritable_file
from lab.settings import COMMITTED, TRIALS, build_parser, flag
from lab.workers import stop_signals_as_interrupt

ROOT = Path(__file__).resolve().parent
PICTURES, README, DOCS = "picture", "README.md", "docs"  # the committed figures, README and pages: presets only
VERDICTS_FIGURE = "verdicts.png"  # the forest plot of every verdict part
RUNS_PAGE = "runs.md"  # in docs/: how to run each experiment, and one's own configurations


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str | None = flag(
        None, f"directory of train.py's results (its --out; default: {COMMITTED}/, then {TRIALS}/ if it has any)"
    )
    pictures: str | None = flag(None, f"directory the figures are written to (default: {PICTURES}/ for {COMMITTED}/, "
                                      "RESULTS/picture/ for any other folder)")
    readme: str | None = flag(None, f"README whose generated tables are rewritten: the verdict table, and with no "
                                    f"docs folder every table (default: {README} for {COMMITTED}/; for any other "
                                    "folder RESULTS/tables.md, written whole; '' for none)")
    docs: str | None = flag(None, f"folder of the experiments' pages, NAME.md, whose generated tables are rewritten "
                                  f"(made where missing) (default: {DOCS}/ for {COMMITTED}/ with the default README; "
                                  "none otherwise)")



def new_page(name: str, bodies: dict[str, str], figures_: list[str], pictures: Path, docs: Path) -> str:
    """An experiment's page where it has none yet: its docstring, its figures and its tables' markers
    (compare.py fills them; what is written around them stays when it runs again)."""
    record = EXPERIMENTS[name]
    links = [f"![{f}]({Path(os.path.relpath(pictures / f, docs)).as_posix()})" for f in figures_]
    text = f"# {name}\n\n{record.doc.strip()}\n\n" + "".join(f"{link}\n\n" for link in links)
    return text + "".join(f"<!-- {marker}:start -->\n<!-- {marker}:end -->\n\n" for marker in bodies).rstrip() + "\n"


def verdicts_page(bodies: dict[str, str], pictures: Path, docs: Path) -> str:
    """The verdicts' page where it has none yet: a title, the forest plot, and every row whole between markers."""
    link = Path(os.path.relpath(pictures / VERDICTS_FIGURE, docs)).as_posix()
    markers = "".join(f"<!-- {marker}:start -->\n<!-- {marker}:end -->\n" for marker in bodies
                      if marker != "verdict-summary")
    return f"# The verdicts, row by row\n\n![{VERDICTS_FIGURE}]({link})\n\n{markers}"


def experiments_table(where: Path, docs: Path) -> str:
    """The list of experiments on page ``where`` (docs/runs.md), from the registry: each one's page, question and
    command."""
    rows = []
    for e in EXPERIMENTS.values():
        page = Path(os.path.relpath(docs / f"{e.name}.md", where.parent)).as_posix()
        question = e.first_sentence()
        rows.append([f"[{e.name}]({page})", question[:1].upper() + question[1:], f"`python train.py {e.name}`"])
    return table(("experiment", "what it asks", "run it"), rows)


def experiments_list(readme: Path, docs: Path) -> str:
    """The README's list of experiments: each one's page, in the registry's order, on one line."""
    return " · ".join(f"[{name}]({Path(os.path.relpath(docs / f'{name}.md', readme.parent)).as_posix()})"
                      for name in EXPERIMENTS)


def texts(bodies: dict[str, dict[str, str]], readme: Path | None, docs: Path | None, pictures: Path,
          drawn: dict[str, Figures]) -> dict[Path, str]:
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
        fill(readme, {"experiments-list": experiments_list(readme, docs)})
        runs = docs / RUNS_PAGE
        fill(runs, {"experiments-table": experiments_table(runs, docs)},
             None if runs.exists() else "# Other configurations\n\n<!-- experiments-table:start -->\n"
                                        "<!-- experiments-table:end -->\n")
    for name, tables_ in bodies.items():
        if docs is None:
            if readme is not None:
                fill(readme, tables_)
            continue
        if name == "verdicts":
            if readme is not None:
                fill(readme, {k: v for k, v in tables_.items() if k == "verdict-summary"})
            page = docs / "verdicts.md"
            fill(page, {k: v for k, v in tables_.items() if k != "verdict-summary"},
                 None if page.exists() else verdicts_page(tables_, pictures, docs))
            continue
        page = docs / f"{name}.md"
        fill(page, tables_, None if page.exists() else new_page(name, tables_, list(drawn[name]), pictures, docs))
    return out


def trials_table_file(folder: Path, bodies: dict[str, dict[str, str]]) -> str:
    """The text of FOLDER/tables.md: every generated table of a folder's results, under its name."""
    head = (f"# Tables of the results in {folder}/\n\nWritten by compare.py from {folder}/: a configuration of "
            f"your own, not the committed record ({COMMITTED}/, whose tables are in the README). The figures are "
            "in picture/ beside this file.\n")
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
                  docs is not None and inside(docs, ROOT / DOCS)]
        for name, r in experiments.items() if any(record) else ():
            differ = EXPERIMENTS[name].off_preset(r["config"])
            if differ:
                raise ValueError(f"{result_paths(results)[name]} is not the {name} preset's run ({', '.join(differ)}): "
                                 f"only the presets' results reach {PICTURES}/, {DOCS}/ and {README} (draw it with "
                                 f"--pictures, --docs and --readme elsewhere)")
        drawn = figures(experiments)
        rows = verdict_rows(experiments)
        if rows:  # the verdicts as a picture, from their parts as data
            records = [record for row in rows for record in row.records()]
            drawn["verdicts"] = {VERDICTS_FIGURE: functools.partial(plot_verdicts, records)}
        todo = {file: draw_ for figures_ in drawn.values() for file, draw_ in figures_.items()}
        bodies = tables(experiments, rows)  # made even without a README: they check what the figures will read
        if whole:
            new = {readme: trials_table_file(results, bodies)}
        else:
            new = texts(bodies, readme, docs, pictures, drawn)
        new |= tidy_data(experiments, results)  # each experiment's results as tidy data, beside them
        if rows:  # every part of the verdict table as data, beside the results it was decided on
            new[results / VERDICTS_FILE] = verdict_data(rows)
            new[results / VERDICTS_CSV] = verdict_csv(rows)
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
            flag_ = "--readme" if path == readme else "--results" if path.suffix != ".md" else "--docs"
            parser.error(f"argument {flag_}: cannot write {str(path)!r}: {problem}")
    files = [str(path) for path in new if path.suffix == ".md" and (docs is None or path.parent != docs)]
    files += [f"{docs}/"] if docs else []
    files += [f"the data beside the results in {results}/"] if any(path.suffix != ".md" for path in new) else []
    kept = f"{pictures}/ and {' and '.join(files)} are as they were" if new else f"{pictures}/ is as it was"
    try:
        # The tables' new texts are written first and renamed into place last, once every figure is in
        # place: a full disk or a stop on the way leaves figures, README and pages as they were, together.
        with contextlib.ExitStack() as stack:
            for path, text in new.items():
                stack.enter_context(staged(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
            drawn_ = write_pictures(todo, pictures)
    except OSError as exc:
        sys.exit(f"compare.py: cannot write {exc.filename} ({exc.strerror or exc}): {kept}")
    pages = [path for path in new if path.suffix == ".md"]
    in_docs = [path for path in pages if docs is not None and path.parent == docs]
    texts_ = [str(path) for path in pages if path not in in_docs] + ([f"{len(in_docs)} pages in {docs}/"]
                                                                     if in_docs else [])
    names = [path.name for path in new if path.suffix != ".md"]
    data = [f"{names.count(name)} × {name}" if names.count(name) > 1 else name for name in sorted(set(names))]
    print(f"{results}/: {len(drawn_)} figures into {pictures}/"
          + (f"; the tables into {' and '.join(texts_)}" if texts_ else "")
          + (f"; the data beside the results ({', '.join(data)})" if data else ""))


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
        print(f"Your own runs: their figures are in {TRIALS}/picture/, their tables in {TRIALS}/tables.md.")
    return 0


if __name__ == "__main__":
    try:
        with stop_signals_as_interrupt():
            sys.exit(main())
    except KeyboardInterrupt as exc:
        why = f"stopped by {exc.args[0]}" if exc.args else "interrupted"
        sys.exit(f"{why}: the figures and tables it was writing are as they were")
