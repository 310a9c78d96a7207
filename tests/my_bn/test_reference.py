"""The reference functions of my_bn/reference.py against PyTorch, and every faster version against the reference."""

import importlib

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import my_bn
from my_bn import MyBN, batchnorm_backward, batchnorm_forward
from my_bn import fast as my_bn_fast

SHAPES = {"NC": (16, 5), "NCL": (8, 5, 7), "NCHW": (4, 5, 3, 6)}


def inputs(shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 3 + 2
    gamma, beta = (torch.randn(shape[1], generator=gen, dtype=dtype) for _ in range(2))
    dy = torch.randn(shape, generator=gen, dtype=dtype)
    return x, gamma, beta, dy


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_reference_matches_pytorch(shape, affine):
    """batchnorm_forward / batchnorm_backward against F.batch_norm and autograd, float64."""
    x, gamma, beta, dy = inputs(shape)
    if not affine:
        gamma = beta = None
    y, mean, var, cache = batchnorm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batchnorm_backward(dy, cache)

    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, gamma, beta)]
    y_ref = F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True, eps=1e-5)
    y_ref.backward(dy)
    dims = [0, *range(2, x.dim())]
    torch.testing.assert_close(y, y_ref.detach())
    torch.testing.assert_close(dx, leaves[0].grad)
    torch.testing.assert_close(mean.reshape(-1), x.mean(dims))
    torch.testing.assert_close(var.reshape(-1), x.var(dims, correction=0))
    if affine:
        assert dgamma.shape == dbeta.shape == (shape[1],)
        torch.testing.assert_close(dgamma, leaves[1].grad)
        torch.testing.assert_close(dbeta, leaves[2].grad)


@pytest.fixture
def small_blocks(blocks):
    """Blocks of eight rows, summed in two groups: every loop of the blocked kernels runs several times."""
    blocks(40, 2)


@pytest.mark.parametrize("shape", [(64, 5), (32, 5, 7), (16, 5, 3, 6)], ids=["NC", "NCL", "NCHW"])
def test_blocked_matches_the_reference(shape, small_blocks):
    x, gamma, beta, dy = inputs(shape, seed=1)
    y, mean, var, cache = batchnorm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batchnorm_backward(dy, cache)
    y_b, mean_b, var_b, invstd_b, m = my_bn_fast.forward("blocked", x, gamma, beta, 1e-5, None)
    assert m == x.numel() // x.size(1)
    torch.testing.assert_close(y_b, y)
    torch.testing.assert_close(mean_b, mean.reshape(-1))
    torch.testing.assert_close(var_b, var.reshape(-1))
    for ours, theirs in zip(
        my_bn_fast.backward("blocked", dy, x, gamma, mean_b, invstd_b, m, None), (dx, dgamma, dbeta), strict=True
    ):
        torch.testing.assert_close(ours, theirs)


def run_as(path, monkeypatch, shape=(64, 5), dtype=torch.float64):
    """Output, input gradient and running statistics of MyBN with every call sent down ``path``."""
    monkeypatch.setattr(my_bn_fast, "path_for", lambda *_: path)
    x, gamma, beta, dy = inputs(shape, seed=2, dtype=dtype)
    bn = MyBN(shape[1], dtype=dtype)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    xi = x.clone().requires_grad_()
    y = bn(xi)
    y.backward(dy)
    return [y.detach(), xi.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]


@pytest.mark.parametrize("path", ["blocked", "lean"])
@pytest.mark.parametrize("shape", [(64, 5), (16, 5, 7)], ids=["NC", "NCL"])
def test_each_path_of_the_layer_matches_the_reference(path, shape, monkeypatch, small_blocks):
    """Through MyBN, as dispatched: "lean" (the GPU's path) runs on the CPU here too."""
    reference = run_as("reference", monkeypatch, shape)
    for ours, theirs in zip(run_as(path, monkeypatch, shape), reference, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_path_for_picks_by_size_device_and_options():
    small, large = torch.zeros(64, 10), torch.zeros(4096, 8)
    assert my_bn_fast.path_for(small, None) == "reference"
    assert my_bn_fast.path_for(large, None) == "blocked"
    assert my_bn_fast.path_for(large.to("meta"), None) == "lean"  # off the CPU
    assert my_bn_fast.path_for(small, object()) == "sync"
    assert my_bn_fast.sync_group(None) is None  # no torch.distributed group here


def test_reference_only_switch(monkeypatch):
    """my_bn.REFERENCE_ONLY sends a large input (with either backend) through the reference functions."""
    calls = []
    monkeypatch.setattr(my_bn, "REFERENCE_ONLY", True)
    monkeypatch.setattr(my_bn_fast, "forward", lambda *a: calls.append(a))
    monkeypatch.setattr(my_bn.reference, "batchnorm_forward", lambda *a: calls.append("ref") or batchnorm_forward(*a))
    x = torch.randn(4096, 8)
    for layer in (MyBN(8), MyBN(8, backend="cpp")):
        torch.testing.assert_close(layer(x), nn.BatchNorm1d(8)(x))
    assert calls == ["ref", "ref"]


def test_reference_only_from_the_environment(monkeypatch):
    """MYBN_REFERENCE_ONLY, read when my_bn.settings is imported (here: imported again)."""
    try:
        for value, expected in (("1", True), ("0", False), ("", False)):
            monkeypatch.setenv("MYBN_REFERENCE_ONLY", value)
            importlib.reload(my_bn.settings)
            assert my_bn.REFERENCE_ONLY is expected, value
    finally:
        monkeypatch.undo()
        importlib.reload(my_bn.settings)  # as this process started
