"""What the test files share: the fixtures that choose which path of MyBN runs, and the helpers that
build a PyTorch layer and a MyBN with the same state and run one step of each. The helpers are
imported by name (``from conftest import make_pair, step``)."""

import pytest
import torch

import my_bn
from my_bn import cpp as my_bn_cpp
from my_bn import fast as my_bn_fast

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
