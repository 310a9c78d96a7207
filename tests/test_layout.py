"""The shape of the code: no import cycle, no file too long to hold in one's head, and the lesson
(my_bn/reference.py) first and short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGES = ("my_bn", "lab", "experiments")
ENTRY_POINTS = ("train", "compare", "verdicts", "bench")  # the scripts at the top; everything else sits in a package


def project_files() -> dict[str, Path]:
    """Module name -> file, for every .py file of the project (tests aside)."""
    files = {p.stem: p for p in ROOT.glob("*.py")}
    for package in PACKAGES:
        for p in (ROOT / package).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return files


def imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (inside functions too): ``from pkg import sub``
    names ``pkg.sub`` where that is a module, else ``pkg``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= subs or {node.module}
            if len(subs) < len(node.names):
                found.add(node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules importing it runs first. A package's submodule imported from
    outside the package runs the package's __init__ first, which imports its other submodules."""
    files = project_files()
    graph = {}
    for name, path in files.items():
        found = imports(path, set(files))
        found |= {m.split(".")[0] for m in found if "." in m and not name.startswith(m.split(".")[0])}
        graph[name] = found - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as the list of modules around it), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finds_a_known_cycle_and_none_where_there_is_none():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert "my_bn.layer" in graph and "my_bn.reference" in graph["my_bn.function"]
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_model_code_imports_nothing_of_the_experiments():
    """The layer imports only itself; the norm registry, the nets and the data import only the layer (and
    the nets the registry)."""
    graph = import_graph()
    layer = {name for name in graph if name == "my_bn" or name.startswith("my_bn.")}
    for name in layer:
        assert graph[name] <= layer, (name, graph[name] - layer)
    for name in ("lab.norms", "lab.nets", "lab.data"):
        assert graph[name] - {"lab", "lab.norms"} <= layer, (name, graph[name] - layer)


@pytest.mark.parametrize("name", ["lab.settings", "lab.results"])
def test_settings_and_the_results_format_sit_at_the_bottom(name):
    """lab/settings.py and lab/results.py import nothing of the project but each other's lower floor
    (results -> settings) and the layer's own settings (its backends, which --mybn-backend offers)."""
    layer_settings = {"my_bn", "my_bn.settings"}
    allowed = {"lab.results": {"lab", "lab.settings", *layer_settings}, "lab.settings": layer_settings}[name]
    assert import_graph()[name] <= allowed


def test_the_root_holds_the_entry_points_only_and_none_imports_another():
    """Library code lives in the packages (my_bn, lab, experiments); the scripts at the top import
    them and never each other (nor does the library import a script)."""
    graph = import_graph()
    assert sorted(p.stem for p in ROOT.glob("*.py")) == sorted(ENTRY_POINTS)
    for name, found in graph.items():
        assert not found & set(ENTRY_POINTS), (name, found & set(ENTRY_POINTS))


def test_no_file_is_too_long():
    long = {name: n for name, path in project_files().items() if (n := len(path.read_text().splitlines())) > 450}
    assert not long, long


def test_the_lesson_comes_first_and_is_short():
    """reference.py: the formulas in its first screen, the whole of batch norm's math in under 150 lines;
    the module file about 300 lines at most."""
    reference = (ROOT / "my_bn" / "reference.py").read_text().splitlines()
    first_screen = "\n".join(reference[:30])
    for line in ("mean = Σx / M", "var  = Σxc² / M", "x̂    = xc · invstd", "y    = gamma · x̂ + beta", "dbeta  = Σdy"):
        assert line in first_screen, line
    assert len(reference) < 150
    assert len((ROOT / "my_bn" / "layer.py").read_text().splitlines()) <= 300
