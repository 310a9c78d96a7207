"""MyBN(compiled=True): the blocked algorithm through torch.compile, held to nn.BatchNorm1d like the eager layer."""

import os
import shutil

import pytest
import torch
from torch import nn

import my_bn_fast
from my_bn import MyBN, batchnorm_backward, batchnorm_forward


def cpu_compiles() -> bool:
    """Whether torch.compile can build a CPU kernel here: it needs a working C++ toolchain."""
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        return False
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception:  # noqa: BLE001 - any failure to build means no compiled CPU path on this machine
        return False
    return True


DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not cpu_compiles(), reason="torch.compile cannot build here")),
    *(["cuda"] if torch.cuda.is_available() else []),
]


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_matches_pytorch(device):
    """Two shapes (the second one compiles for any shape), training steps, then eval."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(64, 10), (16, 10, 9)]:
        ref = nn.BatchNorm1d(10, momentum=0.3, device=device)
        mine = MyBN(10, momentum=0.3, device=device, compiled=True)
        with torch.no_grad():
            ref.weight.copy_(torch.randn(10, generator=gen))
            ref.bias.copy_(torch.randn(10, generator=gen))
        mine.load_state_dict(ref.state_dict())
        for training in (True, True, False):
            x = (torch.randn(shape, generator=gen) * 3 + 2).to(device)
            dy = torch.randn(shape, generator=gen).to(device)
            results = []
            for layer in (ref, mine):
                xi = x.clone().requires_grad_()
                y = layer.train(training)(xi)
                y.backward(dy)
                results.append([y, xi.grad, layer.weight.grad, layer.bias.grad, layer.running_mean, layer.running_var])
                layer.zero_grad(set_to_none=True)
            for theirs, ours in zip(*results, strict=True):
                torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_large_mean_small_std(device):
    """Statistics around a pivot: as close to float64 as the eager layer on a shuffled batch."""
    gen = torch.Generator().manual_seed(0)
    x = (1e4 + 1e-2 * torch.randn(4096, 4, generator=gen)).to(device)
    truth = nn.BatchNorm1d(4, dtype=torch.float64, device=device)(x.double())
    ours = MyBN(4, device=device, compiled=True)(x)
    torch.testing.assert_close(ours.double(), truth, atol=1e-5, rtol=0)  # PyTorch's CPU kernel: off by 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_matches_the_reference(device):
    """my_bn_fast's fused forward and backward, compiled, against my_bn's reference functions (float64)."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(48, 6, 5, generator=gen, dtype=torch.float64) * 3 + 2).to(device)
    gamma, beta = (torch.randn(6, generator=gen, dtype=torch.float64).to(device) for _ in range(2))
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
    y, mean, var, cache = batchnorm_forward(x, gamma, beta, 1e-5)
    y_c, mean_c, var_c, invstd_c, m = my_bn_fast.forward("compiled", x, gamma, beta, 1e-5, None)
    for ours, theirs in ((y_c, y), (mean_c, mean.reshape(-1)), (var_c, var.reshape(-1))):
        torch.testing.assert_close(ours, theirs)
    grads = my_bn_fast.backward("compiled", dy, x, gamma, mean_c, invstd_c, m, None)
    for ours, theirs in zip(grads, batchnorm_backward(dy, cache), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_momentum_none_compiles_once():
    """The cumulative average (momentum=None) takes its factor as a tensor: one graph for every step."""
    graphs = []

    def counting_backend(gm, example_inputs):  # runs the captured graph as it is: no C++ compiler needed
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    mine = nn.Sequential(nn.Linear(4, 4), MyBN(4, momentum=None)).double()
    ref = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)).double()
    ref.load_state_dict(mine.state_dict())
    compiled = torch.compile(mine, backend=counting_backend)
    for _ in range(8):
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        compiled(x).sum().backward()
        ref(x).sum().backward()
    assert len(graphs) == 1
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(mine[1], name), getattr(ref[1], name), rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_jit_script_says_what_works_instead():
    for _ in range(2):  # the same one line every time (TorchScript's own second error was another)
        with pytest.raises(RuntimeError) as exc:
            torch.jit.script(MyBN(4))
        message = str(exc.value)
        assert "\n" not in message and "MyBN is not scriptable" in message
        assert all(tool in message for tool in ("torch.compile", "torch.export", "torch.jit.trace"))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit:DeprecationWarning")
def test_jit_trace_matches_pytorch():
    x = torch.randn(16, 4, dtype=torch.float64)
    for training in (True, False):
        ref = nn.BatchNorm1d(4, dtype=torch.float64).train(training)
        mine = MyBN(4, dtype=torch.float64).train(training)
        traced = torch.jit.trace(mine, x, check_trace=False)
        torch.testing.assert_close(traced(x + 1), ref(x + 1))
