"""Batch Renormalization and ghost batch norm (my_bn/variants.py) against their definitions: Ioffe's
Algorithm 1 written out with autograd, r and d detached; ghost batches as MyBN run on each in turn."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from my_bn import MyBatchRenorm, MyBatchRenorm2d, MyBN, MyBN2d, MyGhostBN, MyGhostBN2d


def renorm_by_hand(x, gamma, beta, mean, var, eps, r_max, d_max):
    """Algorithm 1 of Ioffe (2017), per channel over (N, H, W), with σ = sqrt(running_var + ε)."""
    dims = [0, 2, 3] if x.dim() == 4 else [0]
    shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    mu_b = x.mean(dims, keepdim=True)
    sigma_b = torch.sqrt(((x - mu_b) ** 2).mean(dims, keepdim=True) + eps)
    sigma = torch.sqrt(var + eps).view(shape)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max).detach()
    d = ((mu_b - mean.view(shape)) / sigma).clamp(-d_max, d_max).detach()
    return gamma.view(shape) * ((x - mu_b) / sigma_b * r + d) + beta.view(shape)


def steps(layer, inputs):
    """Train-mode outputs and input/parameter gradients of ``layer`` over ``inputs``, one step each."""
    outs = []
    for x in inputs:
        x = x.clone().requires_grad_()
        y = layer(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append((y.detach(), x.grad, layer.weight.grad.clone(), layer.bias.grad.clone()))
        layer.weight.grad = layer.bias.grad = None
    return outs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_renorm_with_r_max_1_and_d_max_0_is_exactly_mybn(dtype):
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(8, 3, 4, 4, generator=gen, dtype=dtype) * 3 + 1 for _ in range(4)]
    renorm, plain = MyBatchRenorm2d(3, r_max=1.0, d_max=0.0, dtype=dtype), MyBN2d(3, dtype=dtype)
    with torch.no_grad():
        for layer in (renorm, plain):
            layer.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
            layer.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    for a, b in zip(steps(renorm, inputs), steps(plain, inputs), strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    states = (renorm.state_dict().values(), plain.state_dict().values())
    assert all(torch.equal(u, v) for u, v in zip(*states, strict=True))


def test_renorm_follows_algorithm_1_with_r_and_d_detached():
    """Float64, running estimates far from the batch's so that some channels clip and others do not:
    the output and every gradient equal autograd through the algorithm."""
    gen = torch.Generator().manual_seed(1)
    layer = MyBatchRenorm2d(4, r_max=1.5, d_max=0.5, momentum=0.3, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, -0.5, 2.0, 1.0]))
        layer.bias.copy_(torch.tensor([0.2, 0.1, -0.1, 0.0]))
        layer.running_mean.copy_(torch.tensor([0.0, 2.0, -0.2, 0.5]))
        layer.running_var.copy_(torch.tensor([1.0, 0.2, 9.0, 1.1]))
    gamma, beta = (p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias))
    mean, var = layer.running_mean.clone(), layer.running_var.clone()
    scale, shift = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([0.0, 1.0, 0.0, 0.5])
    x = torch.randn(6, 4, 3, 3, generator=gen, dtype=torch.float64) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    x.requires_grad_()
    r, d = layer.correction(x)
    assert (r == 1.5).any() and ((r > 1 / 1.5) & (r < 1.5)).any() and (d.abs() == 0.5).any()  # both regimes
    weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = layer(x)
    (y * weights).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    expected = renorm_by_hand(x2, gamma, beta, mean, var, layer.eps, 1.5, 0.5)
    (expected * weights).sum().backward()
    torch.testing.assert_close(y.detach(), expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, gamma.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, beta.grad, rtol=1e-10, atol=1e-12)


def test_renorm_running_estimates_and_eval_are_nn_batchnorms():
    """The running estimates update as nn.BatchNorm2d's do (whatever r and d), the state dict loads both
    ways, and eval mode gives nn.BatchNorm2d's output."""
    gen = torch.Generator().manual_seed(2)
    layer, native = MyBatchRenorm2d(3, r_max=2.0, d_max=1.0, momentum=0.2), nn.BatchNorm2d(3, momentum=0.2)
    for _ in range(3):
        x = torch.randn(5, 3, 4, 4, generator=gen) * 2 + 1
        layer(x), native(x)
    for key, value in native.state_dict().items():
        torch.testing.assert_close(layer.state_dict()[key], value, rtol=1e-6, atol=1e-6)
    x = torch.randn(5, 3, 4, 4, generator=gen)
    again = nn.BatchNorm2d(3)
    again.load_state_dict(layer.state_dict())
    back = MyBatchRenorm2d(3)
    back.load_state_dict(native.state_dict())
    torch.testing.assert_close(back.eval()(x), native.eval()(x))
    torch.testing.assert_close(layer.eval()(x), again.eval()(x))


def test_renorm_warmup_relaxes_the_clips_as_stated():
    layer = MyBatchRenorm(2, r_max=3.0, d_max=5.0, warmup=(10, 30, 20))
    at = {}
    for step in (0, 10, 20, 30, 40):
        layer.num_batches_tracked.fill_(step)
        at[step] = tuple(round(v.item(), 6) for v in layer.limits(torch.float64))
    assert at == {0: (1.0, 0.0), 10: (1.0, 0.0), 20: (2.0, 5.0), 30: (3.0, 5.0), 40: (3.0, 5.0)}
    plain = MyBatchRenorm(2, r_max=3.0, d_max=5.0)  # no warm-up: the clips from the first step
    assert tuple(v.item() for v in plain.limits(torch.float64)) == (3.0, 5.0)


def test_ghost_batches_are_mybn_on_each_in_turn():
    gen = torch.Generator().manual_seed(3)
    ghost, alone = MyGhostBN2d(3, ghost_batch_size=4, momentum=None), MyBN2d(3, momentum=None)
    x = (torch.randn(10, 3, 2, 2, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    ghost.double(), alone.double()
    weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = ghost(x)
    (y * weights).sum().backward()
    chunks = [c.detach().clone().requires_grad_() for c in x.split(4)]
    outs = [alone(c) for c in chunks]
    (torch.cat(outs) * weights).sum().backward()
    assert torch.equal(y, torch.cat(outs))
    assert torch.equal(x.grad, torch.cat([c.grad for c in chunks]))
    assert torch.equal(ghost.weight.grad, alone.weight.grad) and torch.equal(ghost.bias.grad, alone.bias.grad)
    assert all(torch.equal(a, b) for a, b in zip(ghost.state_dict().values(), alone.state_dict().values(), strict=True))
    assert int(ghost.num_batches_tracked) == 3  # one update per ghost batch: 4 + 4 + 2
    x = torch.randn(6, 3, 2, 2, generator=gen, dtype=torch.float64)
    assert torch.equal(ghost.eval()(x), alone.eval()(x))
    small = MyGhostBN(3, ghost_batch_size=8)  # a batch no larger than a ghost batch: MyBN's
    y = torch.randn(8, 3, generator=gen)
    assert torch.equal(small(y), MyBN(3)(y))


def test_ghost_output_is_the_chunks_outputs():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(12, 5, generator=gen)
    ghost, alone = MyGhostBN(5, ghost_batch_size=5), MyBN(5)
    assert torch.equal(ghost(x), torch.cat([alone(c) for c in x.split(5)]))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: MyBatchRenorm(3, r_max=0.5), "r_max must be a number at least 1"),
    (lambda: MyBatchRenorm(3, r_max=True), "r_max must be a number at least 1"),
    (lambda: MyBatchRenorm(3, d_max=-1.0), "d_max a number at least 0"),
    (lambda: MyBatchRenorm(3, track_running_stats=False), "needs track_running_stats=True"),
    (lambda: MyBatchRenorm(3, warmup=(5, -1, 0)), "warmup must be three steps"),
    (lambda: MyBatchRenorm(3, warmup=(True, 2, 3)), "warmup must be three steps"),
    (lambda: MyBatchRenorm(3, warmup=(5, 2, 1)), "ramps ending no earlier than the hold"),
    (lambda: MyBatchRenorm(3, warmup=5), "warmup must be three steps"),
    (lambda: MyGhostBN(3, ghost_batch_size=0), "ghost_batch_size must be a positive integer"),
    (lambda: MyGhostBN2d(3, ghost_batch_size=True), "ghost_batch_size must be a positive integer"),
    (lambda: setattr(MyBatchRenorm(3), "sync", True), "MyBatchRenorm does not support sync=True"),
    (lambda: setattr(MyGhostBN(3, ghost_batch_size=2), "sync", True), "MyGhostBN does not support sync=True"),
])
def test_bad_settings_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_renorm_runs_in_a_vmap_ensemble():
    """Three nets' renorm layers stacked (torch.func): each member's gradient and running estimates are
    those of the same layer alone."""
    gen = torch.Generator().manual_seed(5)
    nets = [nn.Sequential(nn.Conv2d(1, 2, 3), MyBatchRenorm2d(2, r_max=2.0, d_max=1.0)) for _ in range(3)]
    params, buffers = stack_module_state(nets)
    x = torch.randn(3, 4, 1, 5, 5, generator=gen)

    def loss(p, b, xi):
        return functional_call(nets[0], (p, b), (xi,)).square().mean()

    grads = vmap(grad(loss))(params, buffers, x)
    for i, net in enumerate(nets):
        net(x[i]).square().mean().backward()
        torch.testing.assert_close(grads["0.weight"][i], net[0].weight.grad)
        torch.testing.assert_close(buffers["1.running_var"][i], net[1].running_var)


@pytest.mark.parametrize(("n", "sizes"), [(9, [4, 5]), (33, [8, 8, 8, 9]), (10, [4, 4, 2]), (5, [5])])
def test_a_short_last_ghost_batch(n, sizes):
    """A batch that ghost batches do not divide: the rest is the last ghost batch, and a rest of one row
    (no variance) joins the one before it, where nn.BatchNorm1d takes the batch (it raised after two updates)."""
    gen = torch.Generator().manual_seed(6)
    g = 4 if n < 30 else 8
    x = torch.randn(n, 3, generator=gen)
    ghost, alone = MyGhostBN(3, ghost_batch_size=g), MyBN(3)
    assert ghost.ghost_sizes(x) == sizes
    assert torch.equal(ghost(x), torch.cat([alone(c) for c in x.split(sizes)]))
    assert all(torch.equal(a, b) for a, b in zip(ghost.state_dict().values(), alone.state_dict().values(), strict=True))
    assert MyGhostBN(3, ghost_batch_size=4).ghost_sizes(torch.randn(9, 3, 2)) == [4, 4, 1]  # one row: 2 values


def test_renorm_on_an_empty_batch_is_batch_norms():
    """An empty batch has no statistics to correct with (r and d would be NaN): zero gradients and γ, β
    unchanged by a step, as nn.BatchNorm2d, and the step counted as nn counts it."""
    torch.manual_seed(7)
    nets = [nn.Sequential(nn.Conv2d(3, 4, 3), norm(4)) for norm in (nn.BatchNorm2d, MyBatchRenorm2d)]
    nets[1].load_state_dict(nets[0].state_dict())
    for net in nets:
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net(torch.randn(0, 3, 8, 8)).sum().backward()
        opt.step()
    ref, ours = nets
    assert torch.equal(ours[1].weight.grad, torch.zeros(4)) and torch.equal(ours[1].bias.grad, torch.zeros(4))
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values(), strict=True))
