"""MyBN as a package for other projects: what `pip install .` installs, and the README's example run
from that installed copy, outside the repository, with both backends."""

import email
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import my_bn
from helpers import ROOT
from my_bn import cpp as my_bn_cpp

README = (ROOT / "README.md").read_text(encoding="utf-8")
SCAFFOLDING = {"lab", "train", "compare", "verdicts", "bench", "experiments", "tests"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install`` of a copy of the repository (as a clean clone has it) into a folder of its own:
    no build folders left in the checkout, and nothing of the test's venv changed."""
    clone, target = tmp_path_factory.mktemp("clone"), tmp_path_factory.mktemp("site")
    skip = shutil.ignore_patterns(".venv", ".git", "results", "picture", "runs", "__pycache__", ".*cache*",
                                  ".hypothesis", "build", "*.egg-info")
    shutil.copytree(ROOT, clone, ignore=skip, dirs_exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--disable-pip-version-check", "--target", str(target), str(clone)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return target


def test_only_the_layer_is_installed(installed):
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert top == {"my_bn"}, top
    assert not SCAFFOLDING & {p.stem for p in installed.iterdir()}
    shipped = {p.name for p in (installed / "my_bn").iterdir() if p.suffix in (".py", ".cpp")}
    modules = ("__init__", "convert", "cpp", "fast", "function", "functional", "fusion", "hints", "layer", "reference",
               "settings", "variants")
    assert shipped == {f"{m}.py" for m in modules} | {"cpp.cpp"}
    assert (installed / "my_bn" / "py.typed").exists()  # PEP 561: type checkers read the annotations
    assert (installed / "my_bn" / "cpp.cpp").read_bytes() == my_bn_cpp.SOURCE.read_bytes()


def test_metadata_states_version_python_and_licence(installed):
    (info,) = installed.glob("my_bn-*.dist-info")
    meta = email.message_from_string((info / "METADATA").read_text(encoding="utf-8"))
    assert meta["Name"] == "my-bn" and meta["Version"] == my_bn.__version__
    assert meta["Requires-Python"] == ">=3.11" and meta["License-Expression"] == "MIT"
    requires = meta.get_all("Requires-Dist")
    assert requires[0] == "torch>=2.12" and meta.get_all("Provides-Extra") == ["cpp"]
    assert sorted(requires[1:]) == ['filelock>=3.13; extra == "cpp"', 'ninja>=1.11; extra == "cpp"']
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert (info / "licenses" / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


def test_version_licence_and_citation_agree():
    assert re.fullmatch(r"\d+\.\d+\.\d+", my_bn.__version__)
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r"^cff-version: 1\.2\.0$", citation, re.M)
    assert re.search(rf'^version: "{re.escape(my_bn.__version__)}"$', citation, re.M)
    assert re.search(r"^license: MIT$", citation, re.M)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["requires-python"] == ">=3.11"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_readme_example_runs_from_the_installed_package(installed, tmp_path):
    """The "Use MyBN in your own model" snippet, as written, in a fresh process whose only copy of
    my_bn is the installed one (run from a folder outside the repository), with both backends."""
    section = README.split("## Use MyBN in your own model")[1]
    snippet = section.split("```python\n")[1].split("```")[0]
    checks = (
        "\nimport my_bn\n"
        f"assert my_bn.__file__.startswith({str(installed)!r}), my_bn.__file__\n"
        "assert not net.training and type(net[1]).__name__ == 'MyBN' and net[1].num_batches_tracked == 50\n"
        "assert conv[1].backend == 'cpp' and type(model[1]).__name__ == 'MyBN2d'\n"
        "from my_bn import cpp\n"
        "print('cpp', cpp.available())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", snippet + checks], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "MyBN2d(8, eps=1e-05" in done.stdout
    if my_bn_cpp.compiler() is not None:  # the installed copy built (or found) its C++ backend
        assert done.stdout.strip().endswith("cpp True"), done.stderr


def public_api() -> list[str]:
    """What a user of the package calls: each public name, with the signature of each public callable
    (a class's constructor) and the public methods and properties of each class."""
    import inspect

    lines = []
    for name in sorted(my_bn.__all__):
        obj = getattr(my_bn, name)
        if inspect.isclass(obj):
            lines.append(f"{name}{inspect.signature(obj.__init__)}")
            lines += [f"{name}.{k}" for k in sorted(vars(obj)) if not k.startswith("_")]
        elif callable(obj):
            lines.append(f"{name}{inspect.signature(obj)}")
        else:
            lines.append(name)
    return lines


# The public API of each version, by hash: change the API, and the version must change with it (a new
# entry here, and its section in CHANGELOG.md).
API_OF_VERSION = {"1.1.0": "9e192676"}


def test_the_version_changes_with_the_public_api():
    import hashlib

    digest = hashlib.sha256("\n".join(public_api()).encode()).hexdigest()[:8]
    assert API_OF_VERSION.get(my_bn.__version__) == digest, (
        f"the public API is not the one version {my_bn.__version__} had ({digest}): raise __version__ "
        "(and CITATION.cff's), say what changed in CHANGELOG.md, and add the new hash to API_OF_VERSION"
    )
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(my_bn.__version__)} \(\d{{4}}-\d\d-\d\d\)$", changelog, re.M)
