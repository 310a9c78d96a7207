"""MyBN against nn.BatchNorm1d / nn.BatchNorm2d: same inputs, same parameters, same answers."""

import copy
import gc
import warnings
import weakref

import pytest
import torch
from conftest import make_pair, step
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from my_bn import MyBN, MyBN2d, MyBN3d, MySyncBN, batch_norm_train, convert_to_mybn

MOMENTA = [0.1, 0.5, 0.0, 1.0, None]
# The parity tests run on CUDA too where a GPU is present: there the reference is cuDNN's kernel
# (PyTorch's own CUDA kernel for float64), and MyBN's large inputs take the "lean" path.
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


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
OTHER_RANKS = {
    "2d": (nn.BatchNorm2d, MyBN2d, (4, 3, 5, 6)),
    "3d": (nn.BatchNorm3d, MyBN3d, (2, 3, 3, 4, 5)),
    **{f"sync-{len(shape)}d": (nn.SyncBatchNorm, MySyncBN, shape) for shape in [(16, 3), (4, 3, 5), (2, 3, 4, 2, 3)]},
}


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


def test_fresh_layer_eval_is_identity():
    bn = MyBN(3).eval()
    x = torch.randn(5, 3)
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5)


def test_construction_matches_batchnorm1d():
    for kwargs in [{}, *CONFIGS.values(), {"momentum": None, "eps": 1e-3}]:
        ref, mine = nn.BatchNorm1d(4, **kwargs), MyBN(4, **kwargs)
        assert repr(mine).replace(", backend='cpp'", "") == repr(ref).replace("BatchNorm1d", "MyBN")
        assert [(n, p.shape, p.dtype) for n, p in mine.named_parameters()] == [
            (n, p.shape, p.dtype) for n, p in ref.named_parameters()
        ]
        assert [(n, b.dtype) for n, b in mine.named_buffers()] == [(n, b.dtype) for n, b in ref.named_buffers()]
        assert_same_buffers(ref, mine)
        if ref.affine:
            torch.testing.assert_close(mine.weight, ref.weight)


def test_reset_parameters_and_running_stats():
    bn = MyBN(3)
    with torch.no_grad():
        bn.weight.fill_(2)
        bn.bias.fill_(3)
    bn(torch.randn(8, 3) + 5)
    bn.reset_running_stats()
    assert_same_buffers(nn.BatchNorm1d(3), bn)
    assert bn.weight.eq(2).all()
    bn.reset_parameters()
    assert bn.weight.eq(1).all() and bn.bias.eq(0).all()


def test_state_dict_moves_both_ways():
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 4, torch.float64, momentum=0.3)
    check_parity(ref, mine, (10, 4), torch.float64)
    # MyBN -> BatchNorm1d, after MyBN trained on its own
    mine.train()
    mine(torch.randn(10, 4, dtype=torch.float64) * 5)
    fresh_ref = nn.BatchNorm1d(4, momentum=0.3, dtype=torch.float64)
    fresh_ref.load_state_dict(mine.state_dict(), strict=True)
    assert_same_buffers(fresh_ref, mine)
    torch.testing.assert_close(fresh_ref.weight, mine.weight)
    # BatchNorm1d -> MyBN
    fresh_my = MyBN(4, momentum=0.3, dtype=torch.float64)
    fresh_my.load_state_dict(fresh_ref.state_dict(), strict=True)
    assert_same_buffers(fresh_ref, fresh_my)
    x = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(fresh_my.eval()(x), fresh_ref.eval()(x))


def test_old_checkpoint_without_num_batches_tracked():
    """A version-1 checkpoint has no num_batches_tracked: the layer keeps its own count, as nn's does
    (with momentum=None that count weighs the next batch)."""
    state = nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    ref, mine = nn.BatchNorm1d(3, momentum=None), MyBN(3, momentum=None)
    for layer in (ref, mine):
        layer.num_batches_tracked.fill_(7)
        layer.load_state_dict(state)
    assert mine.num_batches_tracked.item() == ref.num_batches_tracked.item() == 7
    x = torch.randn(8, 3) * 2 + 1
    ref(x), mine(x)
    assert_same_buffers(ref, mine)
    meta = MyBN(3, device="meta")  # nothing to keep there: 0, as nn
    meta.load_state_dict(state, assign=True)
    assert meta.num_batches_tracked.item() == 0


def test_to_moves_buffers():
    bn = MyBN(3)
    bn(torch.randn(4, 3))
    bn.to(torch.float64)
    assert bn.running_mean.dtype == bn.running_var.dtype == bn.weight.dtype == torch.float64
    assert bn.num_batches_tracked.dtype == torch.long
    bn(torch.randn(4, 3, dtype=torch.float64))
    assert bn.num_batches_tracked.item() == 2


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


def test_convert_to_mybn_small_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 8),
        nn.BatchNorm1d(8, momentum=0.5),
        nn.Tanh(),
        nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8, affine=False)),
        nn.Linear(8, 2),
    ).double()
    model[1].running_mean.fill_(0.3)
    converted = convert_to_mybn(copy.deepcopy(model))
    assert [type(m) for m in converted.modules() if isinstance(m, (MyBN, nn.BatchNorm1d))] == [MyBN, MyBN]
    assert converted[1].momentum == 0.5 and not converted[3][1].affine
    ref_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    my_opt = torch.optim.SGD(converted.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for training in (True, True, True, False):
        x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        model.train(training)
        converted.train(training)
        for net, opt in ((model, ref_opt), (converted, my_opt)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        torch.testing.assert_close(converted(x), model(x))
    for name, buf in model.named_buffers():
        torch.testing.assert_close(dict(converted.named_buffers())[name], buf)


def test_convert_to_mybn_carries_tensors_mode_and_2d():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, bias=False)).double()
    conv[1].eval()
    out = convert_to_mybn(conv)
    assert out is conv and type(out[1]) is MyBN2d and not out[1].training
    assert out[1].bias is None and out[1].weight.dtype == torch.float64
    bn = nn.BatchNorm1d(5)
    weight, running_mean = bn.weight, bn.running_mean
    new = convert_to_mybn(bn)
    assert type(new) is MyBN
    assert new.weight is weight and new.running_mean is running_mean  # optimisers stay valid


def test_convert_to_mybn_by_identity():
    """One layer registered at two places stays one layer, sharing its statistics after .double()."""
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), bn, nn.Tanh(), nn.Sequential(nn.Linear(4, 4), bn))
    ref = copy.deepcopy(model).double()  # deepcopy keeps the sharing
    converted = convert_to_mybn(model).double()
    assert type(converted[1]) is MyBN and converted[3][1] is converted[1]
    assert len(list(converted.modules())) == len(list(ref.modules()))
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(16, 4, generator=gen, dtype=torch.float64) * 2 + 1
        torch.testing.assert_close(converted(x), ref(x))
    converted.eval(), ref.eval()
    torch.testing.assert_close(converted(x), ref(x))
    assert converted[1].num_batches_tracked.item() == ref[1].num_batches_tracked.item() == 6


def test_convert_to_mybn_keeps_hooks():
    """Every kind of hook registered on the old layer fires on the new one, and its handle removes it."""
    bn, calls = nn.BatchNorm1d(3), []
    handles = [
        bn.register_forward_pre_hook(lambda m, args: calls.append("pre")),
        bn.register_forward_hook(lambda m, args, out: calls.append("forward")),
        bn.register_forward_hook(lambda m, args, kwargs, out: calls.append("forward kwargs"), with_kwargs=True),
        bn.register_full_backward_pre_hook(lambda m, grad_out: calls.append("backward pre")),
        bn.register_full_backward_hook(lambda m, grad_in, grad_out: calls.append("backward")),
        bn.register_state_dict_post_hook(lambda m, state, prefix, local: calls.append("state_dict")),
        bn.register_load_state_dict_post_hook(lambda m, keys: calls.append("load")),
    ]
    model = convert_to_mybn(nn.Sequential(bn))
    assert type(model[0]) is MyBN

    def exercise():
        calls.clear()
        model(torch.randn(4, 3, requires_grad=True)).sum().backward()
        model.load_state_dict(model.state_dict())
        return calls

    assert exercise() == ["pre", "forward", "forward kwargs", "backward pre", "backward", "state_dict", "load"]
    for handle in handles:
        handle.remove()
    assert exercise() == []


def test_convert_to_mybn_3d_and_sync_batchnorm():
    group = object()  # any group object is passed through unchanged
    model = nn.Sequential(nn.BatchNorm3d(2), nn.SyncBatchNorm(2, momentum=0.3, process_group=group))
    model[1].eval()
    convert_to_mybn(model)
    assert type(model[0]) is MyBN3d and not model[0].sync
    assert type(model[1]) is MySyncBN and model[1].sync and model[1].process_group is group
    assert model[1].momentum == 0.3 and not model[1].training
    other = object()
    convert_to_mybn(model, sync=True, process_group=other)  # sync=True: every layer over that group
    assert model[0].sync and model[0].process_group is other and model[1].process_group is other


def test_convert_to_mybn_warns_about_what_it_leaves():
    class Scaled(nn.BatchNorm1d):  # a forward of its own
        def forward(self, x):
            return 2 * super().forward(x)

    lazy = nn.LazyBatchNorm1d()
    model = nn.Sequential(Scaled(3), nn.Sequential(lazy), nn.BatchNorm1d(3))
    with pytest.warns(UserWarning, match="left 2 batch-norm layer") as record:
        convert_to_mybn(model)
    message = str(record[0].message)
    assert "Sequential.0 (Scaled)" in message and "Sequential.1.0 (LazyBatchNorm1d)" in message
    assert type(model[0]) is Scaled and model[1][0] is lazy and type(model[2]) is MyBN
    lazy(torch.randn(4, 5))  # a lazy layer becomes nn.BatchNorm1d at its first call, and converts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_to_mybn(model[1])
    assert type(model[1][0]) is MyBN and model[1][0].num_features == 5


def pytorch_and_mine(ref, mine, x):
    """Run both layers on ``x``; return (exception type, message) or None for each."""
    outcomes = []
    for layer in (ref, mine):
        try:
            layer(x)
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - the point is to compare what each raises
            outcomes.append((type(exc), str(exc)))
    return outcomes


# fmt: off
BAD_INPUTS = {
    # name: (layer kwargs, training, input shape, input dtype, words the message must contain)
    "1D input": ({}, True, (4,), torch.float32, ["2D or 3D", "1D"]),
    "4D input": ({}, False, (4, 3, 2, 2), torch.float32, ["2D or 3D", "4D"]),
    "one value per channel": ({}, True, (1, 3), torch.float32, ["more than 1 value", "(1, 3)"]),
    "one value per channel, 3D": ({}, True, (1, 3, 1), torch.float32, ["more than 1 value"]),
    "one value, no tracking, eval": (
        {"track_running_stats": False}, False, (1, 3), torch.float32, ["more than 1 value"]),
    "eps 0 in training": ({"eps": 0.0}, True, (4, 3), torch.float32, ["eps", "positive", "0"]),
    "eps < 0 in eval": ({"eps": -1.0}, False, (4, 3), torch.float32, ["eps", "non-negative"]),
    "wrong channels, train": ({}, True, (4, 5), torch.float32, ["3", "(4, 5)"]),
    "wrong channels, eval": ({}, False, (4, 5, 2), torch.float32, ["3", "(4, 5, 2)"]),
    "wrong channels, no tracking": ({"track_running_stats": False}, True, (4, 5), torch.float32, ["3"]),
    "wrong channels, no affine": ({"affine": False}, False, (4, 5), torch.float32, ["3"]),
    "float64 input, float32 layer": ({}, True, (4, 3), torch.float64, ["float64", "float32"]),
    "integer input": ({}, True, (4, 3), torch.int64, ["floating"]),
}
# fmt: on


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_like_pytorch(name):
    kwargs, training, shape, dtype, words = BAD_INPUTS[name]
    ref, mine = nn.BatchNorm1d(3, **kwargs), MyBN(3, **kwargs)
    ref.train(training)
    mine.train(training)
    x = torch.ones(shape, dtype=dtype)
    ref_out, my_out = pytorch_and_mine(ref, mine, x)
    assert ref_out is not None, "the case must be one that PyTorch rejects"
    assert my_out is not None and my_out[0] is ref_out[0], (my_out, ref_out)
    for word in words:
        assert word in my_out[1], (word, my_out[1])


@pytest.mark.parametrize("layers", ["2d", "3d", "sync-2d"])
def test_bad_input_other_ranks(layers):
    """The wrong rank and one value per channel, as each PyTorch layer words them."""
    ref_cls, my_cls, shape = OTHER_RANKS[layers]
    rank = "at least 2D" if my_cls is MySyncBN else f"{len(shape)}D"
    wrong = (3,) if my_cls is MySyncBN else shape[:-1]
    cases = [(torch.randn(wrong), [f"expected {rank} input (got {len(wrong)}D input)"]),
             (torch.ones((1, 3) + (1,) * (len(shape) - 2)), ["more than 1 value"])]  # fmt: skip
    for x, words in cases:
        ref_out, my_out = pytorch_and_mine(ref_cls(3), my_cls(3), x)
        assert ref_out is not None and my_out is not None and my_out[0] is ref_out[0], (my_out, ref_out)
        assert all(word in my_out[1] and word in ref_out[1] for word in words), (my_out, ref_out)


def test_accepts_what_pytorch_accepts():
    """Edge cases PyTorch allows: eps=0 in eval, channel mismatch with nothing per-channel, N=1 in eval."""
    cases = [
        ({"eps": 0.0}, False, (4, 3)),
        ({"affine": False, "track_running_stats": False}, True, (4, 5)),
        ({}, False, (1, 3)),
        ({}, True, (1, 3, 2)),
    ]
    for kwargs, training, shape in cases:
        ref, mine = nn.BatchNorm1d(3, **kwargs), MyBN(3, **kwargs)
        x = torch.randn(shape)
        torch.testing.assert_close(mine.train(training)(x), ref.train(training)(x))


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
    torch.testing.assert_close(y_my, y_ref)
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
                   for name, v in values.items()}  # fmt: skip
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


def test_fx_symbolic_trace_keeps_the_layer_whole():
    """torch.fx traces MyBN as one call_module node, as it does nn's layers (whose forward has the
    same data-dependent checks), and the traced model trains and evaluates like the original."""
    gen = torch.Generator().manual_seed(3)
    models = []
    for norm in (nn.BatchNorm1d, MyBN):
        torch.manual_seed(0)
        models.append(nn.Sequential(nn.Linear(4, 6, dtype=torch.float64), norm(6, dtype=torch.float64), nn.Tanh()))
    traced = torch.fx.symbolic_trace(models[1])
    assert [n.op for n in traced.graph.nodes] == [n.op for n in torch.fx.symbolic_trace(models[0]).graph.nodes]
    assert isinstance(traced.get_submodule("1"), MyBN)
    for training in (True, True, False):
        x = torch.randn(16, 4, generator=gen, dtype=torch.float64) + 1
        torch.testing.assert_close(traced.train(training)(x), models[0].train(training)(x))
    assert_same_buffers(models[0][1], traced.get_submodule("1"))


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
