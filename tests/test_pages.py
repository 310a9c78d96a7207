"""The README and the pages in docs/: every link and image resolves, as GitHub renders them; every
experiment has its page, with its figures and its tables as compare.py generates them."""

from __future__ import annotations

import pytest

import compare
from experiments import EXPERIMENTS
from helpers import LINK, ROOT, broken_links

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


def test_every_experiment_has_its_page_and_every_figure_is_shown():
    shown = set()
    for page in PAGES:
        shown |= {(page.parent / t).resolve() for t in LINK.findall(page.read_text()) if t.endswith(".png")}
    assert {p.resolve() for p in (ROOT / "picture").glob("*.png")} <= shown
    assert {p.stem for p in (ROOT / "docs").glob("*.md")} >= set(EXPERIMENTS)


def test_the_pages_tables_are_the_code_output():
    """Each experiment's tables are in its page and the verdict table in the README, as compare.py
    writes them from the committed results: the pages are what `compare.py` leaves unchanged."""
    experiments = compare.load_experiments(ROOT / "results")
    bodies = compare.tables(experiments)
    assert set(bodies) == {*EXPERIMENTS, "verdicts"}
    new = compare.texts(bodies, ROOT / "README.md", ROOT / "docs", ROOT / "picture", compare.figures(experiments))
    assert set(new) == {ROOT / "README.md", *(ROOT / "docs" / f"{name}.md" for name in EXPERIMENTS)}
    for path, text in new.items():
        assert path.read_text(encoding="utf-8") == text, path
