"""The README and the pages in docs/: every link and image resolves and every table has as many cells in
each row as in its header, as GitHub renders them; every experiment has its page, with its figures and its
tables as compare.py generates them."""

from __future__ import annotations

import pytest

import compare
from experiments import EXPERIMENTS
from helpers import LINK, ROOT, broken_links, broken_tables
from lab.pages import table

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
def test_the_link_check_finds_what_is_broken(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# A title, with `code`\n\n## Why does it fail?\n\n![ok](../a.png) ![gone](../b.png)\n"
                    "[ok](#why-does-it-fail) [ok](#a-title-with-code) [no](#nowhere) [web](https://x.org/y)\n"
                    "[ok](page.md#why-does-it-fail) [no](other.md)\n```\n[not a link](missing.md)\n```\n")
    assert broken_links(page) == ["../b.png", "#nowhere", "other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_and_image_resolves(page):
    assert broken_links(page) == []


def test_the_table_check_finds_what_is_broken(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n| 1 | 2 | 3 |\n| 1 \\| 2 | 3 |\n\ntext\n\n| c |\n|---|\n"
                    "| 1 | 2 |\n```\n| x |\n|---|\n| 1 | 2 |\n```\n")
    assert broken_tables(page) == ["| 1 | 2 | 3 |", "| 1 | 2 |"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_table_has_its_headers_cells_in_every_row(page):
    assert broken_tables(page) == []


def test_the_one_table_writer_refuses_a_row_that_does_not_fit():
    assert table(("a", "b"), [["1", ""], ["x \\| y", "2"]]) == "| a | b |\n|---|---|\n| 1 | |\n| x \\| y | 2 |"
    with pytest.raises(ValueError, match="row 2 has 3 cells and its header 2"):
        table(("a", "b"), [["1", "2"], ["1", "2", "3"]])
    with pytest.raises(ValueError, match="row 1 has 1 cells"):
        table(("a", "b"), [["1"]])
    for cell in ("x | y", "two\nlines", 3):
        with pytest.raises(ValueError, match="a cell must be text on one line"):
            table(("a", "b"), [["1", cell]])


def test_every_generated_table_goes_through_the_one_writer():
    """No code but lab/pages.py's ``table`` writes a table's rule line (``|---|``), so every table the record
    writes is checked as it is written."""
    code = [p for d in ("experiments", "lab") for p in (ROOT / d).rglob("*.py")]
    code += [ROOT / f for f in ("compare.py", "verdicts.py", "bench.py", "train.py")]
    assert [p.relative_to(ROOT).as_posix() for p in code if "---|" in p.read_text()] == ["lab/pages.py"]


def test_every_experiment_has_its_page_and_every_figure_is_shown():
    shown = set()
    for page in PAGES:
        shown |= {(page.parent / t).resolve() for t in LINK.findall(page.read_text()) if t.endswith(".png")}
    assert {p.resolve() for p in (ROOT / "picture").glob("*.png")} <= shown
    assert {p.stem for p in (ROOT / "docs").glob("*.md")} >= set(EXPERIMENTS)


def test_the_pages_tables_are_the_code_output():
    """Each experiment's tables are in its page, the verdict table in the README and every row whole in the
    verdicts' page, as compare.py writes them from the committed results: the pages are what `compare.py`
    leaves unchanged."""
    experiments = compare.load_experiments(ROOT / "results")
    bodies = compare.tables(experiments)
    assert set(bodies) == {*EXPERIMENTS, "verdicts"}
    new = compare.texts(bodies, ROOT / "README.md", ROOT / "docs", ROOT / "picture", compare.figures(experiments))
    pages = (*EXPERIMENTS, "verdicts", "runs")
    assert set(new) == {ROOT / "README.md", *(ROOT / "docs" / f"{name}.md" for name in pages)}
    for path, text in new.items():
        assert path.read_text(encoding="utf-8") == text, path
