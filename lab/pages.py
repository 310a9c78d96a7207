"""Writing the record's pages and figures: a generated table between its marker comments, and figures
drawn side by side in processes, moved into place together.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from lab.plotting import Figures, pyplot
from lab.workers import process_pool


def replace_between_markers(text: str, name: str, body: str, where: str = "the README") -> str:
    """Put ``body`` between <!-- name:start --> and <!-- name:end --> in ``text`` (the text of ``where``)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{where} needs exactly one '{start}' followed by one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


UNESCAPED_BAR = re.compile(r"(?<!\\)\|")


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", re.sub(r"[`*_]", "", heading.strip().lower())).replace(" ", "-")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, the one way the record writes one: the header, the rule under it and the rows,
    each cell padded by a space (an empty one: a single space). Refused with a ValueError that names it:
    a row whose cells are not as many as the header's (GitHub would drop or shift them silently), and a
    cell that holds a line break or an unescaped ``|`` (either ends or splits the row)."""
    header = list(header)
    lines = [_row(header, "the header"), "|" + "---|" * len(header)]
    for i, cells in enumerate(rows, 1):
        cells = list(cells)
        if len(cells) != len(header):
            raise ValueError(f"table row {i} has {len(cells)} cells and its header {len(header)} "
                             f"({' | '.join(header)}): {' | '.join(map(str, cells))}")
        lines.append(_row(cells, f"row {i}"))
    return "\n".join(lines)


def _row(cells: list[str], where: str) -> str:
    for cell in cells:
        if not isinstance(cell, str) or "\n" in cell or UNESCAPED_BAR.search(cell):
            raise ValueError(f"table {where}: a cell must be text on one line without an unescaped '|', not {cell!r}")
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


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
