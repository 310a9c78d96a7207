"""MyBN as a module, against nn.BatchNorm1d: construction, state dicts, devices, conversion of a model,
bad input and tracing. Each runs once: none of it depends on which path computes the math
(tests/my_bn/test_layer.py runs on every path)."""

import copy
import warnings

import pytest
import torch
from torch import nn

from helpers import CONFIGS, OTHER_RANKS, assert_same_buffers, check_parity, make_pair
from my_bn import MyBN, MyBN2d, MyBN3d, MySyncBN, convert_to_mybn


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
             (torch.ones((1, 3) + (1,) * (len(shape) - 2)), ["more than 1 value"])]
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
