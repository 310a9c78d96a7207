"""The fixtures the test files share: which path of MyBN runs (``every_path``, ``blocks``,
``cpp_backend``) and the tiny results of every experiment (``tiny_results``). The session computes
under the record's numerics policy. What the tests share that is not a fixture is in helpers.py."""

import pytest

import my_bn
from helpers import TINY_ALL
from lab import numerics
from my_bn import cpp as my_bn_cpp
from my_bn import fast as my_bn_fast

numerics.apply()  # the test session computes as train.py does, before any test runs torch

PATHS = ["as dispatched", "reference only", "one-row blocks", "grouped blocks", "cpp"]


@pytest.fixture
def cpp_backend(monkeypatch):
    """Every MyBN the test builds takes backend="cpp": skipped where no C++ compiler exists, failed
    where one exists but the C++ backend does not build."""
    if my_bn_cpp.compiler() is None:
        pytest.skip("no C++ compiler here")
    assert my_bn_cpp.available(), "a C++ compiler, but the C++ backend did not build"
    monkeypatch.setattr(my_bn, "BACKEND", "cpp")


@pytest.fixture
def blocks(monkeypatch):
    """``blocks(elements, groups)``: every input, however small, through my_bn.fast's blocked kernels,
    cut into blocks of about ``elements`` elements whose rows are summed in ``groups`` groups."""

    def use(elements: int, groups: int) -> None:
        monkeypatch.setattr(my_bn_fast, "SMALL_ELEMS", 0)
        monkeypatch.setattr(my_bn_fast, "BLOCK_ELEMS", elements)
        monkeypatch.setattr(my_bn_fast, "ROW_GROUPS", groups)

    return use


@pytest.fixture(params=PATHS)
def every_path(request, monkeypatch):
    """A math test five times (``@pytest.mark.usefixtures("every_path")``): as MyBN dispatches each
    input (the reference for small inputs, my_bn.fast's versions for large ones), with
    my_bn.REFERENCE_ONLY (the reference for every input), through the blocked kernels every large CPU
    input takes, cut into blocks of one row, and into blocks of eight rows summed in two groups of
    four, and with the C++ backend (every MyBN built with backend="cpp"), where a compiler can build it."""
    if request.param == "cpp":
        request.getfixturevalue("cpp_backend")
    elif request.param == "reference only":
        monkeypatch.setattr(my_bn, "REFERENCE_ONLY", True)
    elif request.param != "as dispatched":
        use = request.getfixturevalue("blocks")
        use(7, 1) if request.param == "one-row blocks" else use(40, 2)
    return request.param


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory):
    """The real CLI path on a tiny config: every experiment, as the README's main command runs them (once
    per test session: several files draw from it)."""
    import train

    out = tmp_path_factory.mktemp("results")
    assert train.main(["all", *TINY_ALL, "--out", str(out)]) == 0
    return out


