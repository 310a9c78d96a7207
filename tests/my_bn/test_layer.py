"""MyBN against nn.BatchNorm1d / nn.BatchNorm2d: same inputs, same parameters, same answers."""

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import CONFIGS, OTHER_RANKS, assert_same_buffers, check_parity, make_pair, step
from my_bn import MyBN, MyBN2d, batch_norm_train

MOMENTA = [0.1, 0.5, 0.0, 1.0, None]
# The parity tests run on CUDA too where a GPU is present: there the reference is cuDNN's kernel
# (PyTorch's own CUDA kernel for float64), and MyBN's large inputs take the "lean" path.
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("momentum", MOMENTA)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", [(16, 5), (8, 5, 7)], ids=["NC", "NCL"])
def test_parity_bn1d(dtype, momentum, config, shape, device):
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 5, dtype, momentum=momentum, device=device, **CONFIGS[config])
    check_parity(ref, mine, shape, dtype)


# Every other rank: nn.BatchNorm2d/3d, and nn.SyncBatchNorm, which takes any rank from 2 (in one
# process it does not synchronise, and runs on the CPU)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("layers", OTHER_RANKS)
def test_parity_other_ranks(layers, dtype, momentum, config, device):
    ref_cls, my_cls, shape = OTHER_RANKS[layers]
    ref, mine = make_pair(ref_cls, my_cls, 3, dtype, momentum=momentum, device=device, **CONFIGS[config])
    check_parity(ref, mine, shape, dtype)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4096, 8), (64, 8, 64)], ids=["NC", "NCL"])
def test_parity_large_float32(shape, device):
    """Above the size where MyBN leaves the plain formula (for the large-input path of each device)."""
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 8, torch.float32, device=device)
    check_parity(ref, mine, shape, torch.float32, steps=2, atol=1e-4, rtol=1e-4)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("param_dtype", ["same", "float32"])
def test_low_precision_accumulates_in_float32(dtype, param_dtype, device):
    """Half/bfloat16 input: at least as close as PyTorch to float64 on the same rounded numbers."""
    pdtype = dtype if param_dtype == "same" else torch.float32
    gen = torch.Generator().manual_seed(1)
    layers = [(nn.BatchNorm1d, torch.float64), (nn.BatchNorm1d, pdtype), (MyBN, pdtype)]
    truth, ref, mine = (cls(6, dtype=d, device=device) for cls, d in layers)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    truth.load_state_dict(ref.state_dict())
    mine.load_state_dict(ref.state_dict())
    for training in (True, True, False):
        x = (torch.randn(64, 6, generator=gen) * 3 + 20).to(device, dtype)
        dy = torch.randn(64, 6, generator=gen).to(device, dtype)
        results = []
        for layer, xdtype in ((truth, torch.float64), (ref, dtype), (mine, dtype)):
            y, grads = step(layer.train(training), x.to(xdtype), dy.to(xdtype))
            assert y.dtype == xdtype
            results.append([y, *grads, layer.running_mean, layer.running_var])
        for exact, theirs, ours in zip(*results, strict=True):
            assert ours.dtype == theirs.dtype
            err_theirs = (theirs.double() - exact).abs().max()
            err_ours = (ours.double() - exact).abs().max()
            slack = 4 * torch.finfo(ours.dtype).eps * exact.abs().max()
            assert err_ours <= err_theirs + slack, (err_ours, err_theirs)


@pytest.mark.usefixtures("every_path")
def test_momentum_conventions():
    """momentum weights the new batch; None is a cumulative average; 0 freezes the estimates."""
    x1 = torch.tensor([[0.0], [2.0]], dtype=torch.float64)  # mean 1, unbiased var 2
    x2 = torch.tensor([[4.0], [8.0]], dtype=torch.float64)  # mean 6, unbiased var 8
    for momentum, mean, var in [(0.25, 0.25 * 1, 0.75 + 0.25 * 2), (0.0, 0.0, 1.0), (1.0, 1.0, 2.0)]:
        bn = MyBN(1, momentum=momentum, dtype=torch.float64)
        bn(x1)
        assert bn.running_mean.item() == pytest.approx(mean)
        assert bn.running_var.item() == pytest.approx(var)
    bn = MyBN(1, momentum=None, dtype=torch.float64)
    bn(x1)
    bn(x2)
    assert bn.num_batches_tracked.item() == 2
    assert bn.running_mean.item() == pytest.approx((1 + 6) / 2)
    assert bn.running_var.item() == pytest.approx((2 + 8) / 2)


@pytest.mark.usefixtures("every_path")
def test_gradcheck_and_gradgradcheck():
    gen = torch.Generator().manual_seed(0)
    for shape in [(6, 3), (4, 3, 5)]:
        x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
        for args in [(x, w, b), (x, None, None), (x, w, None)]:

            def fn(*inputs):
                return batch_norm_train(*inputs, 1e-5)[0]

            assert torch.autograd.gradcheck(fn, args)
            assert torch.autograd.gradgradcheck(fn, args)
    bn = MyBN(3, dtype=torch.float64).eval()  # eval: plain autograd through running statistics
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(bn, (x,))


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_matches_pytorch(device):
    """A gradient penalty (needs create_graph=True) gives PyTorch's second-order gradients."""
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 4, torch.float64, device=device)
    x = torch.randn(12, 4, dtype=torch.float64).to(device)
    results = []
    for layer in (ref, mine):
        xi = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(layer(xi).pow(3).sum(), xi, create_graph=True)
        gx.pow(2).sum().backward()
        results.append([xi.grad, layer.weight.grad, layer.bias.grad])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a)


@pytest.mark.usefixtures("every_path")
def test_empty_batch_counts_and_keeps_statistics():
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 3, torch.float32)
    check_parity(ref, mine, (0, 3), torch.float32, steps=2)
    assert mine.num_batches_tracked.item() == 2
    torch.testing.assert_close(mine.running_mean, torch.zeros(3))


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
def test_large_mean_small_std_float32(device):
    """Channel mean 1e4, std 1e-2: the naive E[x^2] - E[x]^2 loses every digit here."""
    gen = torch.Generator().manual_seed(0)
    x = (1e4 + 1e-2 * torch.randn(256, 4, generator=gen)).to(device)
    truth = nn.BatchNorm1d(4, dtype=torch.float64, device=device)(x.double())  # exact statistics of the same floats
    ours, theirs = MyBN(4, device=device)(x), nn.BatchNorm1d(4, device=device)(x)
    assert torch.isfinite(ours).all()
    # PyTorch's CPU kernel is itself off by 0.03-0.2 here (depending on the thread count)
    torch.testing.assert_close(ours, theirs, atol=0.5, rtol=0)
    torch.testing.assert_close(ours.double(), truth, atol=1e-5, rtol=0)
    naive_var = (x * x).mean(0) - x.mean(0) ** 2  # for contrast: garbage, often negative
    assert ((naive_var - x.double().var(0, correction=0)).abs() > 1).any()


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("device", DEVICES)
def test_constant_channel_is_finite(device):
    x = torch.randn(8, 2, 3, device=device)
    x[:, 1] = 7.0
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 2, torch.float32, device=device)
    xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_my = ref(xr), mine(xm)
    dy = torch.randn_like(x)
    y_ref.backward(dy)
    y_my.backward(dy)
    assert torch.isfinite(y_my).all() and torch.isfinite(xm.grad).all()
    torch.testing.assert_close(y_my[:, 1], mine.bias[1].expand(8, 3).detach())
    torch.testing.assert_close(y_my[:, 0], y_ref[:, 0])
    # PyTorch's kernel is off on the constant channel: the last bit of its mean, times 1/sqrt(eps) ≈ 316 (up to
    # 1.1e-5 with the kernels of the portable numerics, 4e-6 with the AVX-512 ones); ours is β exactly (above)
    torch.testing.assert_close(y_my[:, 1], y_ref[:, 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(xm.grad, xr.grad)
    assert_same_buffers(ref, mine)


def strided(values: torch.Tensor, kind: str) -> torch.Tensor:
    """``values`` (C,) as a tensor of another layout: a slice with a step, or with the negative bit."""
    if kind == "slice with a step":
        return torch.stack([values, torch.full_like(values, 99.0)], 1).view(-1)[::2]
    return torch._neg_view(-values)  # memory holding -values, read through the negative bit


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("kind", ["slice with a step", "negative view"])
def test_parameters_and_buffers_of_any_layout(kind):
    """Weight, bias and running estimates that are not contiguous (functional_call, a parametrization):
    read and written where they lie, the same numbers as nn's; x of those layouts too. (The running
    estimates are slices in both cases: nn's kernel leaves a running estimate with the negative bit
    unchanged, where MyBN updates it as lerp_ would.)"""
    gen = torch.Generator().manual_seed(0)
    c = 5
    x = torch.randn(16, c, generator=gen, dtype=torch.float64) * 2 + 1
    dy = torch.randn(16, c, generator=gen, dtype=torch.float64)
    values = {name: torch.randn(c, generator=gen, dtype=torch.float64) for name in ("weight", "bias", "running_mean")}
    values["running_var"] = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    outputs, grads, buffers = [], [], []
    for layer in (nn.BatchNorm1d(c, dtype=torch.float64), MyBN(c, dtype=torch.float64)):
        tensors = {name: strided(v, "slice with a step" if name.startswith("running") else kind)
                   for name, v in values.items()}
        for name in ("weight", "bias"):
            tensors[name].requires_grad_()
        assert not any(t.is_contiguous() and not t.is_neg() for t in tensors.values())
        xs = strided(x.reshape(-1), kind).view(16, c) if kind == "negative view" else x.t().contiguous().t()
        xs.requires_grad_()
        y = torch.func.functional_call(layer, tensors, (xs,))
        y.backward(dy)
        outputs.append(y)
        grads.append([xs.grad, tensors["weight"].grad, tensors["bias"].grad])
        buffers.append([tensors["running_mean"].clone(), tensors["running_var"].clone()])
    torch.testing.assert_close(outputs[1], outputs[0])
    for ours, theirs in [*zip(*grads, strict=True), *zip(*buffers, strict=True)]:
        torch.testing.assert_close(ours, theirs)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("channels", [3, 50_000])
def test_an_expanded_weight(channels):
    """One gamma for every channel, as ``w[:1].expand_as(w)`` or ``torch.tensor(1.).expand(C)`` give
    (stride 0): every channel reads that one number, and its gradient is the sum over channels."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, channels, generator=gen, dtype=torch.float64)
    dy = torch.randn(4, channels, generator=gen, dtype=torch.float64)
    results = []
    for layer in (nn.BatchNorm1d(channels, dtype=torch.float64), MyBN(channels, dtype=torch.float64)):
        gamma = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
        y = torch.func.functional_call(layer, {"weight": gamma.expand(channels)}, (x,))
        y.backward(dy)
        results.append([y, gamma.grad, layer.running_mean])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.usefixtures("every_path")
def test_a_parametrized_weight():
    """torch.nn.utils.parametrize: the weight is recomputed, here expanded from its first entry."""

    class FirstForAll(nn.Module):
        def forward(self, w):
            return w[:1].expand_as(w)

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(32, 4, generator=gen, dtype=torch.float64) * 3
    results = []
    for layer in make_pair(nn.BatchNorm1d, MyBN, 4):
        nn.utils.parametrize.register_parametrization(layer, "weight", FirstForAll())
        y = layer(x)
        y.pow(3).sum().backward()
        results.append([y, layer.parametrizations.weight.original.grad, layer.bias.grad, layer.running_var])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("row", [0, 9], ids=["first row", "a later row"])
def test_inf_and_nan_inputs_reach_the_running_estimates_as_in_pytorch(row):
    """An inf makes its channel's mean inf (Σx/M), a NaN makes it NaN, and the variance NaN, in nn;
    MyBN's corrected mean must not turn that inf into NaN. The value sits in the first row, or in a
    later one (another block of the blocked kernels)."""
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x[row, 0], x[row, 1], x[row, 2] = float("inf"), float("nan"), float("-inf")
    x[0, 3], x[9, 3] = float("inf"), float("-inf")  # both: the mean is NaN
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 5)
    torch.testing.assert_close(mine(x), ref(x), equal_nan=True)
    assert mine.running_mean[0].item() == float("inf") and mine.running_mean[2].item() == float("-inf")
    assert mine.running_mean[1:4:2].isnan().all()
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(mine, name), getattr(ref, name), equal_nan=True)


@pytest.mark.usefixtures("every_path")
def test_no_graph_is_kept_across_steps():
    bn = MyBN(4)
    x_ref = None
    for i in range(20):
        x = torch.randn(32, 4, requires_grad=True)
        bn(x).sum().backward()
        if i == 0:
            x_ref = weakref.ref(x)
        del x
    gc.collect()
    assert x_ref() is None, "an old input is still alive: some graph holds on to it"
    for buf in (bn.running_mean, bn.running_var):
        assert not buf.requires_grad and buf.grad_fn is None


def aten_ops(layer, x):
    """Names of every operator a forward and backward of ``layer`` runs."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        layer(x.clone().requires_grad_()).sum().backward()
    return {event.name for event in prof.events()}


@pytest.mark.usefixtures("every_path")
def test_no_pytorch_batch_norm_kernel_is_called():
    x = torch.randn(8, 3)
    assert any("batch_norm" in op for op in aten_ops(nn.BatchNorm1d(3), x))  # the check can fail
    for layer in (MyBN(3), MyBN(3).eval(), MyBN(3, track_running_stats=False).eval()):
        assert not [op for op in aten_ops(layer, x) if "batch_norm" in op]


@pytest.mark.usefixtures("every_path")
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 9),
    c=st.integers(1, 6),
    length=st.one_of(st.none(), st.integers(1, 5)),
    momentum=st.sampled_from(MOMENTA),
    config=st.sampled_from(sorted(CONFIGS)),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes_and_configs(n, c, length, momentum, config, eps, seed):
    ref, mine = make_pair(
        nn.BatchNorm1d, MyBN, c, torch.float64, seed=seed, momentum=momentum, eps=eps, **CONFIGS[config]
    )
    shape = (n, c) if length is None else (n, c, length)
    check_parity(ref, mine, shape, torch.float64, steps=3, seed=seed)


def float64_batch_norm(x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of x in float64, γ = 1 and β = 0: the answer float32 is held to."""
    x = x.double()
    dims = [0, *range(2, x.dim())]
    return (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, correction=0, keepdim=True) + 1e-5)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (8, 3, 5), (256, 3)])
def test_large_mean_small_std_of_any_rank(shape):
    """Mean 1e4, std 1e-2 on 2D, 3D and 4D inputs: within 1e-5 of float64, as the layer's page says. Σx/M
    is one number per channel, subtracted from every value alike (x - Σx·(1/M) in one operation rounded
    differently in the vectorised body and in the tail: 1.7e-2 off on (4, 3, 5, 5))."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen) * 1e-2 + 1e4
    layer = (MyBN2d if len(shape) == 4 else MyBN)(3)
    torch.testing.assert_close(layer(x).double(), float64_batch_norm(x), atol=1e-5, rtol=0)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("value", [1e5, 1e10, 1e30])
@pytest.mark.parametrize("shape", [(8, 3), (8, 3, 5), (8, 3, 2, 2)])
def test_a_constant_channel_at_any_magnitude(value, shape):
    """A constant channel has variance 0 whatever its value: output β, dx = γ/sqrt(eps)·(dy - mean dy), the
    running variance (1 - momentum)·1, as in float64. (It was 0.37 off β at 1e5, running_var 52 at 1e10,
    and at 1e30 the residuals squared to inf: dx = 0.)"""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen)
    x[:, 1] = value
    x.requires_grad_()
    layer = (MyBN2d if len(shape) == 4 else MyBN)(3)
    y = layer(x)
    dy = torch.randn(shape, generator=gen)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(y[:, 1], torch.zeros_like(y[:, 1]))
    expected = (dy[:, 1] - dy[:, 1].mean()) / 1e-5**0.5
    torch.testing.assert_close(dx[:, 1], expected, rtol=1e-5, atol=1e-4)
    assert layer.running_var[1].item() == pytest.approx(0.9)
    assert layer.running_mean[1].item() == pytest.approx(0.1 * value, rel=1e-6)


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize("shape", [(16, 3), (16, 3, 4), (4096, 3, 4)])
def test_values_near_the_float32_limit(shape):
    """Values in [2.3e38, 3.3e38]: a float32 Σx overflows. The running mean is then the finite mean (as
    nn's on 3D input; nn's 2D kernel gives inf), the variance (about 1e75) is beyond float32, inf as in
    nn, and the output finite: β where the variance is inf (as nn), the float64 answer where the C++
    backend keeps it in double. No NaN anywhere."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(shape, generator=gen) * 1e38 + 2.3e38
    layer = MyBN(3)
    y = layer(x)
    assert torch.isfinite(y).all()
    assert torch.isfinite(layer.running_mean).all() and layer.running_var.isinf().all()
    dims = [0, *range(2, x.dim())]
    torch.testing.assert_close(layer.running_mean.double(), 0.1 * x.double().mean(dims), rtol=1e-6, atol=0)
    if layer.backend == "python":
        assert torch.equal(y, torch.zeros_like(y))
    else:
        torch.testing.assert_close(y.double(), float64_batch_norm(x), atol=1e-5, rtol=0)


@pytest.mark.usefixtures("every_path")
def test_an_infinite_variance_stays_inf_as_in_pytorch():
    """x·1e20 has a variance beyond float32: the running variance is inf after every step, as nn keeps it
    ((1 - m)·inf + m·inf), not NaN (torch.lerp's inf + m·(inf - inf)); eval then outputs β, as nn."""
    gen = torch.Generator().manual_seed(4)
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 3, torch.float32)
    for _ in range(3):
        x = torch.randn(16, 3, 5, generator=gen) * 1e20
        ref(x), mine(x)
    assert mine.running_var.isinf().all() and ref.running_var.isinf().all()
    x = torch.randn(4, 3, 5, generator=gen)
    torch.testing.assert_close(mine.eval()(x), ref.eval()(x))


def test_expanded_running_estimates_are_refused_before_any_update():
    """A running estimate whose elements share memory (stride 0) cannot be updated in place: one line that
    names the layer, and nothing counted or changed."""
    layer = MyBN(3)
    layer.running_mean = torch.zeros(1).expand(3)
    with pytest.raises(RuntimeError, match=r"^MyBN: running_mean has elements that share memory"):
        layer(torch.randn(4, 3))
    assert layer.num_batches_tracked.item() == 0 and torch.equal(layer.running_var, torch.ones(3))
    layer.eval()(torch.randn(4, 3))  # eval only reads them
