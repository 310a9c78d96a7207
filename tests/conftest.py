"""What the test files share, in one place: the fixtures that choose which path of MyBN runs
(``every_path``, ``blocks``, ``cpp_backend``) and the helpers that hold MyBN to PyTorch's layer
(``make_pair``, ``step``, ``check_parity``, ...); the tiny results of every experiment
(``tiny_results``); and the link check of the Markdown pages (``broken_links``). The helpers are
imported by name (``from conftest import make_pair, step``)."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import my_bn
from lab import numerics
from my_bn import MyBN2d, MyBN3d, MySyncBN
from my_bn import cpp as my_bn_cpp
from my_bn import fast as my_bn_fast

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--ranges", "1", "5", "--seeds", "0", "1", "--epochs", "2"]  # every experiment, as small as it runs
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


def make_pair(ref_cls, my_cls, num_features, dtype=torch.float64, seed=0, device="cpu", backend=None, **kwargs):
    """A PyTorch layer with random gamma/beta, and a MyBN (of ``backend``) loaded from its state dict."""
    ref = ref_cls(num_features, dtype=dtype, device=device, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    mine = my_cls(num_features, dtype=dtype, device=device, backend=backend, **kwargs)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def step(layer, x, dy):
    """One forward and backward: the output and the gradients of input, weight and bias (None where absent)."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    grads = [x.grad] + [None if p is None else p.grad for p in (layer.weight, layer.bias)]
    layer.zero_grad(set_to_none=True)
    return y, grads


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory):
    """The real CLI path on a tiny config: every experiment, as the README's main command runs them (once
    per test session: several files draw from it)."""
    import train

    out = tmp_path_factory.mktemp("results")
    assert train.main(["all", *TINY, "--out", str(out)]) == 0
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """The links and images of Markdown ``page`` that lead nowhere: a path that does not exist relative
    to the page's folder, or an #anchor that is no heading of the page it points into."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    return broken


# MyBN against PyTorch's layers (tests/test_my_bn.py, test_my_bn_api.py)

CONFIGS = {
    "default": {},
    "no_affine": {"affine": False},
    "no_bias": {"bias": False},
    "no_tracking": {"track_running_stats": False},
}


def assert_same_buffers(ref, mine, **tol):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        r, m = getattr(ref, name), getattr(mine, name)
        if r is None:
            assert m is None, name
        else:
            assert m.dtype == r.dtype, name
            torch.testing.assert_close(m, r, **tol, msg=lambda s, name=name: f"{name}: {s}")


def check_parity(ref, mine, shape, dtype, steps=4, seed=0, atol=None, rtol=None):
    """Several training steps, then eval: outputs, three gradients and three buffers agree."""
    gen = torch.Generator().manual_seed(seed)
    device = mine.running_mean.device if mine.running_mean is not None else mine.weight.device
    tol = {} if atol is None else {"atol": atol, "rtol": rtol}
    for mode in ["train"] * steps + ["eval"] * 2:
        ref.train(mode == "train")
        mine.train(mode == "train")
        # shifted, scaled batches so that the running statistics have something to track
        x = (torch.randn(shape, generator=gen, dtype=dtype) * 3 + 2).to(device)
        dy = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        y_ref, g_ref = step(ref, x, dy)
        y_my, g_my = step(mine, x, dy)
        assert y_my.dtype == y_ref.dtype
        torch.testing.assert_close(y_my, y_ref, **tol, msg=lambda s, mode=mode: f"{mode} output: {s}")
        for name, a, b in zip(("input", "weight", "bias"), g_my, g_ref, strict=True):
            if b is None:
                assert a is None, name
            else:
                torch.testing.assert_close(a, b, **tol, msg=lambda s, mode=mode, name=name: f"{mode} d{name}: {s}")
        assert_same_buffers(ref, mine, **tol)


OTHER_RANKS = {
    "2d": (nn.BatchNorm2d, MyBN2d, (4, 3, 5, 6)),
    "3d": (nn.BatchNorm3d, MyBN3d, (2, 3, 3, 4, 5)),
    **{f"sync-{len(shape)}d": (nn.SyncBatchNorm, MySyncBN, shape) for shape in [(16, 3), (4, 3, 5), (2, 3, 4, 2, 3)]},
}
