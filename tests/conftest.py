"""Fixtures shared by the test files."""

import pytest

import my_bn
from my_bn import cpp as my_bn_cpp


@pytest.fixture
def cpp_backend(monkeypatch):
    """Every MyBN the test builds takes backend="cpp": skipped where no C++ compiler exists, failed
    where one exists but the C++ backend does not build."""
    if my_bn_cpp.compiler() is None:
        pytest.skip("no C++ compiler here")
    assert my_bn_cpp.available(), "a C++ compiler, but the C++ backend did not build"
    monkeypatch.setattr(my_bn, "BACKEND", "cpp")
