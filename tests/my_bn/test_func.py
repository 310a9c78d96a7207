"""MyBN under torch.func and forward-mode AD, against nn.BatchNorm1d/2d under the same transform.

Each test builds the same small net twice, with ``nn.BatchNorm*`` and with ``MyBN*`` (same initial
weights), applies one transform to both and compares in float64 to a relative 1e-9 of the largest
value. Where PyTorch's layer gives a wrong answer itself (second derivatives through its batch-norm
kernel under torch.func), MyBN is held to finite differences and to plain double backward instead.
"""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, stack_module_state, vjp, vmap
from torch.utils._pytree import tree_flatten

import my_bn
from my_bn import MyBN, MyBN2d, batchnorm_forward
from my_bn import fast as my_bn_fast

# torch.func's jacrev and jacfwd call torch.jit.script inside, which warns
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
DTYPE = torch.float64
# (input shape, reference layer, MyBN layer); the channel count is dim 1
SHAPES = {
    "NC": ((8, 5), nn.BatchNorm1d, MyBN),
    "NCL": ((6, 5, 3), nn.BatchNorm1d, MyBN),
    "NCHW": ((4, 5, 2, 3), nn.BatchNorm2d, MyBN2d),
}


@pytest.fixture(autouse=True, params=["as dispatched", "blocked", "cpp"])
def dispatch(request):
    """Every test three times: as MyBN dispatches these small inputs (the reference functions), with
    every input sent through the blocked kernels (whose forward runs on the transforms' unwrapped
    tensors; their backward and jvp then go through the reference formulas), and with every MyBN
    built with backend="cpp", which must hand each of these calls to the Python backend (forward-mode
    AD and the torch.func transforms) or its backward to the reference (vmap over the backward)."""
    if request.param == "cpp":
        request.getfixturevalue("cpp_backend")
    elif request.param == "blocked":
        request.getfixturevalue("blocks")(12, 1)
    return request.param


class Net(nn.Module):
    """Linear over the channels, the norm layer, tanh, and a linear read-out: second derivatives
    through the norm layer are not zero."""

    def __init__(self, norm, channels: int = 5, track: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.mix = nn.Linear(channels, channels, dtype=DTYPE)
        self.norm = norm(channels, track_running_stats=track, dtype=DTYPE)
        self.out = nn.Linear(channels, 1, dtype=DTYPE)
        with torch.no_grad():  # gamma and beta away from 1 and 0
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.mix(x.movedim(1, -1)).movedim(-1, 1)
        return self.out(torch.tanh(self.norm(x)).movedim(1, -1)).sum(-1)


def pair(case: str, track: bool = False, seed: int = 0):
    shape, ref_cls, my_cls = SHAPES[case]
    return shape, Net(ref_cls, track=track, seed=seed), Net(my_cls, track=track, seed=seed)


def data(shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def assert_same(expected, actual, rtol: float = 1e-9):
    """Every tensor of two equal pytrees within rtol of the largest value of ``expected``."""
    expected, _ = tree_flatten(expected)
    actual, _ = tree_flatten(actual)
    assert len(expected) == len(actual)
    scale = max(t.abs().max().item() for t in expected)
    assert scale > 0
    for e, a in zip(expected, actual, strict=True):
        assert e.shape == a.shape
        torch.testing.assert_close(a, e, rtol=0, atol=rtol * scale)


def loss(net):
    """``f(params, x)``: the net's mean squared output, functionally in its parameters."""
    return lambda params, x: functional_call(net, params, (x,)).square().mean()


def params(net) -> dict:
    return {k: v.detach() for k, v in net.named_parameters()}


@pytest.mark.parametrize("case", SHAPES)
def test_grad_and_vjp(case):
    shape, ref, mine = pair(case)
    x = data(shape)
    results = []
    for net in (ref, mine):
        g = grad(loss(net), argnums=(0, 1))(params(net), x)
        out, pullback = vjp(lambda x, net=net: net(x), x)
        results.append((g, pullback(torch.linspace(-1, 1, out.numel(), dtype=DTYPE).view(out.shape))))
    assert_same(*results)


@pytest.mark.parametrize("case", SHAPES)
def test_jacobians(case):
    shape, ref, mine = pair(case)
    x = data(shape)
    assert_same(jacrev(ref)(x), jacrev(mine)(x))
    assert_same(jacfwd(ref)(x), jacfwd(mine)(x))
    assert_same(jacrev(mine)(x), jacfwd(mine)(x))


@pytest.mark.parametrize("case", SHAPES)
def test_hessian_in_the_input(case):
    shape, ref, mine = pair(case)
    x = data(shape)
    f_ref, f_mine = (lambda x, net=net: net(x).square().mean() for net in (ref, mine))
    assert_same(hessian(f_ref)(x), hessian(f_mine)(x))
    assert_same(jacrev(jacrev(f_ref))(x), jacrev(jacrev(f_mine))(x))


def test_hessian_in_the_parameters_is_right_where_pytorchs_is_not():
    """The second derivative of the loss in gamma and in the weights below the norm layer:
    MyBN's, under torch.func (reverse over reverse, forward over reverse), equals plain double
    backward and finite differences. nn.BatchNorm1d's under torch.func does not (its plain double
    backward is right, and there the two layers agree)."""
    shape, ref, mine = pair("NC")
    x = data(shape)
    p_ref, p_mine = params(ref), params(mine)
    names = list(p_mine)

    def plain_hessian(net, p):  # torch.autograd.functional: double backward, no torch.func
        f = lambda *ts: loss(net)(dict(zip(names, ts, strict=True)), x)  # noqa: E731
        return torch.autograd.functional.hessian(f, tuple(p[k] for k in names))

    expected = plain_hessian(ref, p_ref)
    assert_same(expected, plain_hessian(mine, p_mine))
    as_dicts = lambda h: tuple(tuple(h[a][b] for b in names) for a in names)  # noqa: E731
    assert_same(expected, as_dicts(hessian(loss(mine))(p_mine, x)))
    assert_same(expected, as_dicts(jacrev(jacrev(loss(mine)))(p_mine, x)))

    # One entry by central differences: d/dW[0, 0] of dL/dgamma[0]
    def dgamma(w00: float) -> torch.Tensor:
        p = dict(p_mine, **{"mix.weight": p_mine["mix.weight"].clone()})
        p["mix.weight"][0, 0] = w00
        return grad(loss(mine))(p, x)["norm.weight"][0]

    h, w = 1e-5, p_mine["mix.weight"][0, 0].item()
    finite = (dgamma(w + h) - dgamma(w - h)) / (2 * h)
    i, j = names.index("norm.weight"), names.index("mix.weight")
    assert abs(expected[i][j][0, 0, 0] - finite) < 1e-7
    pytorch = hessian(loss(ref))(p_ref, x)["norm.weight"]["mix.weight"][0, 0, 0]
    assert abs(pytorch - finite) > 1e-3  # if this fails, PyTorch fixed it: update the README


@pytest.mark.parametrize("case", SHAPES)
def test_jvp_and_forward_ad(case):
    shape, ref, mine = pair(case)
    x, tangent = data(shape), data(shape, seed=2)
    results = []
    for net in (ref, mine):
        p = params(net)
        p_tangents = {k: torch.full_like(v, 0.1) for k, v in p.items()}
        by_func = jvp(lambda p, x, net=net: functional_call(net, p, (x,)), (p, x), (p_tangents, tangent))
        with fwAD.dual_level():
            duals = {k: fwAD.make_dual(v, p_tangents[k]) for k, v in p.items()}
            by_dual = fwAD.unpack_dual(functional_call(net, duals, (fwAD.make_dual(x, tangent),))).tangent
        results.append((by_func, by_dual))
    assert_same(*results)


def test_jvp_of_affine_free_layer_in_gamma_and_beta_alone():
    """Tangents for some inputs only: the others are None in MyBN's jvp."""
    x = data((8, 5))
    for affine in (True, False):
        ref = nn.BatchNorm1d(5, affine=affine, track_running_stats=False, dtype=DTYPE)
        mine = MyBN(5, affine=affine, track_running_stats=False, dtype=DTYPE)
        results = []
        for layer in (ref, mine):
            p = params(layer)
            t = {k: torch.linspace(-1, 1, v.numel(), dtype=DTYPE) for k, v in p.items()}
            f = lambda p, layer=layer: functional_call(layer, p, (x,))  # noqa: E731
            results.append(jvp(f, (p,), (t,))[1] if p else jvp(lambda x, layer=layer: layer(x), (x,), (x.cos(),))[1])
        assert_same(*results)


@pytest.mark.parametrize("case", SHAPES)
def test_vmap_over_chunks_and_per_chunk_gradients(case):
    """vmap over 3 chunks of a batch: each chunk normalised with its own statistics."""
    shape, ref, mine = pair(case)
    chunks = data((3, *shape))
    assert_same(vmap(ref)(chunks), vmap(mine)(chunks))
    assert_same(vmap(mine)(chunks), torch.stack([mine(c) for c in chunks]))
    per_chunk = [vmap(grad(loss(net)), in_dims=(None, 0))(params(net), chunks) for net in (ref, mine)]
    assert_same(*per_chunk)
    assert_same(grad(lambda p: vmap(lambda c: loss(mine)(p, c))(chunks).sum())(params(mine)),
                {k: v.sum(0) for k, v in per_chunk[1].items()})


def test_vmap_with_batch_dim_elsewhere_and_unbatched_input():
    """in_dims other than 0, and a batched gamma/beta over one shared input."""
    layer = MyBN(5, track_running_stats=False, dtype=DTYPE)
    x = data((8, 3, 5))  # the 3 members along dim 1
    assert_same(torch.stack([layer(x[:, i]) for i in range(3)], 1), vmap(layer, in_dims=1, out_dims=1)(x))
    gammas, x0 = data((3, 5), seed=3), x[:, 0]
    f = lambda g, layer: functional_call(layer, {"weight": g}, (x0,))  # noqa: E731
    ref = nn.BatchNorm1d(5, track_running_stats=False, dtype=DTYPE)
    assert_same(vmap(lambda g: f(g, ref))(gammas), vmap(lambda g: f(g, layer))(gammas))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_ensemble_with_stack_module_state(momentum):
    """Three MyBN nets trained as one with vmap: outputs, gradients and running statistics as each
    net on its own (nn.BatchNorm1d with momentum=None cannot: it calls float() on a batched tensor)."""
    nets = [Net(MyBN, track=True, seed=s) for s in range(3)]
    for net in nets:
        net.norm.momentum = momentum
    x = data((8, 5))
    stacked, buffers = stack_module_state(nets)
    base = nets[0]

    def f(p, b, x):
        return functional_call(base, (p, b), (x,)).square().mean()

    for _ in range(2):  # twice: the second step uses the running statistics' count
        grads = vmap(grad(f), in_dims=(0, 0, None))(stacked, buffers, x)
    for i, net in enumerate(nets):
        for _ in range(2):
            net.zero_grad()
            net(x).square().mean().backward()
        assert_same({k: p.grad for k, p in net.named_parameters()}, {k: g[i] for k, g in grads.items()})
        assert_same(dict(net.named_buffers()), {k: b[i] for k, b in buffers.items()})
    if momentum is not None:  # nn.BatchNorm1d takes the same ensemble and agrees
        refs = [Net(nn.BatchNorm1d, track=True, seed=s) for s in range(3)]
        ref_stacked, ref_buffers = stack_module_state(refs)
        g = lambda p, b, x: functional_call(refs[0], (p, b), (x,)).square().mean()  # noqa: E731
        for _ in range(2):
            ref_grads = vmap(grad(g), in_dims=(0, 0, None))(ref_stacked, ref_buffers, x)
        assert_same(ref_grads, grads)
        assert_same(ref_buffers, buffers)


@pytest.mark.parametrize("case", SHAPES)
def test_per_sample_gradients_in_eval_mode(case):
    shape, ref, mine = pair(case, track=True)
    x = data(shape)
    results = []
    for net in (ref, mine):
        net.train()
        net(x * 2 + 1)  # running statistics away from 0 and 1
        net.eval()
        b = dict(net.named_buffers())
        f = lambda p, xi, net=net, b=b: functional_call(net, (p, b), (xi.unsqueeze(0),)).square().sum()  # noqa: E731
        results.append(vmap(grad(f), in_dims=(None, 0))(params(net), x))
    assert_same(*results)


def test_low_precision_under_vmap_accumulates_in_float32():
    x = data((3, 16, 4)).to(torch.bfloat16)
    layer = MyBN(4, track_running_stats=False, dtype=torch.float32)
    expected = torch.stack([layer(c) for c in x])
    assert vmap(layer)(x).dtype == torch.bfloat16
    torch.testing.assert_close(vmap(layer)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "transform",
    [
        lambda m, x: vmap(m)(x.view(2, 4, 5)),
        lambda m, x: grad(lambda x: m(x).sum())(x),
        lambda m, x: jacrev(m)(x),
        lambda m, x: jvp(m, (x,), (x,)),
    ],
    ids=["vmap", "grad", "jacrev", "jvp"],
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_with_buffers_from_outside_is_refused(transform, momentum):
    """Where the running statistics would be updated in place from inside a transform that does not
    see them (BatchNorm refuses too): one clear error that names MyBN, and nothing changed."""
    layer = MyBN(5, momentum=momentum, dtype=DTYPE)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError) as exc:
        transform(layer, data((8, 5)))
    message = str(exc.value)
    assert message.startswith("MyBN in training mode updates running_mean") and "\n" not in message
    assert "track_running_stats=False" in message and "stack_module_state" in message
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(RuntimeError):  # nn.BatchNorm1d refuses the same
        transform(nn.BatchNorm1d(5, momentum=momentum, dtype=DTYPE), data((8, 5)))


def test_large_input_under_transforms():
    """Above SMALL_ELEMS the forward runs the blocked kernels on the unwrapped tensors; the backward
    and the jvp under a transform take the reference formulas."""
    ref = nn.BatchNorm1d(16, track_running_stats=False, dtype=DTYPE)
    mine = MyBN(16, track_running_stats=False, dtype=DTYPE)
    chunks, tangent = data((2, 2048, 16)) * 3 + 2, data((2048, 16), seed=4)
    assert chunks[0].numel() > my_bn_fast.SMALL_ELEMS
    f = lambda layer: lambda x: torch.tanh(layer(x)).sum()  # noqa: E731
    assert_same(vmap(grad(f(ref)))(chunks), vmap(grad(f(mine)))(chunks))
    assert_same(jvp(ref, (chunks[0],), (tangent,)), jvp(mine, (chunks[0],), (tangent,)))


def test_reference_functions_differentiate_like_the_function():
    """The reference forward differentiated by autograd itself gives the same second derivatives as
    MyBN's hand-written derivatives under torch.func."""
    x, gamma = data((8, 5)), data((5,), seed=5)
    f_ref = lambda x: torch.tanh(batchnorm_forward(x, gamma, None, 1e-5)[0]).sum()  # noqa: E731
    layer = MyBN(5, affine=True, bias=False, track_running_stats=False, dtype=DTYPE)
    with torch.no_grad():
        layer.weight.copy_(gamma)
    f_mine = lambda x: torch.tanh(layer(x)).sum()  # noqa: E731
    assert_same(torch.autograd.functional.hessian(f_ref, x), hessian(f_mine)(x))


def test_torch_export_matches_pytorch():
    x = data((16, 4))
    for training in (True, False):
        mine = nn.Sequential(nn.Linear(4, 4, dtype=DTYPE), MyBN(4, dtype=DTYPE)).train(training)
        ref = nn.Sequential(nn.Linear(4, 4, dtype=DTYPE), nn.BatchNorm1d(4, dtype=DTYPE)).train(training)
        ref.load_state_dict(mine.state_dict())
        exported = torch.export.export(mine, (x,)).module()
        assert_same(ref(x + 1), exported(x + 1))


def test_reference_only_switch_under_transforms(monkeypatch):
    monkeypatch.setattr(my_bn, "REFERENCE_ONLY", True)
    shape, ref, mine = pair("NCL")
    x = data(shape)
    assert_same(hessian(lambda x: ref(x).sum())(x), hessian(lambda x: mine(x).sum())(x))
