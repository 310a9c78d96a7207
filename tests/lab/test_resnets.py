"""lab/resnets.py: every variant of the residual net on a case with a known answer (SkipInit's net is the
identity on its stream, Fixup's constants and its zero output, Scaled WS's weight statistics and its gain
for ReLU, the normaliser-free net's β), the shared draws, and a grouped net as its members side by side."""

import math

import pytest
import torch
from scipy import integrate

from lab.resnets import NF_ALPHA, RELU_GAIN, VARIANTS, ResNet, ScaledWSConv2d, fixup_scale, nf_betas


def digits(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_skipinit_is_the_identity_on_its_stream_at_initialisation():
    """α = 0: every block passes its input on unchanged, so the net is its stem, a ReLU, the pooling and the
    classifier, at any depth."""
    net = ResNet("skipinit", 3, depth=5).train()
    x, trace = digits(), []
    out = net(x, trace)
    stream = net.stem(x)
    assert all(torch.equal(xs, stream) and torch.count_nonzero(f) == 0 for xs, f in trace)
    expected = net.head(torch.relu(stream).mean((2, 3), keepdim=True)).flatten(1)
    assert torch.equal(out, expected)
    assert net.scalars.shape == (5, 1, 1) and torch.count_nonzero(net.scalars) == 0


def test_fixups_constants_and_its_zero_output():
    """L^(−1/(2m−2)): 1/4 for 16 blocks of 2 layers, 8^(−1/4) for 8 blocks of 3. The first convolution of each
    branch is the He net's draw times L^(−1/2), the last and the classifier are 0, the multipliers 1 and the
    biases 0; so at initialisation the net outputs 0 (the classifier's bias) and every branch adds 0."""
    assert fixup_scale(16) == 0.25 and math.isclose(fixup_scale(8, layers=3), 8 ** -0.25)
    fixup, he = ResNet("fixup", 4, depth=16), ResNet("plain", 4, depth=16)
    for i, (a, b) in enumerate(zip(fixup.convs, he.convs, strict=True)):
        assert torch.equal(a.weight, b.weight * 0.25) if i % 2 == 0 else torch.count_nonzero(a.weight) == 0
    assert torch.count_nonzero(fixup.head.weight) == 0 and torch.equal(fixup.stem.weight, he.stem.weight)
    assert torch.equal(fixup.scalars[:, 4], torch.ones(16, 1)) and torch.count_nonzero(fixup.scalars[:, :4]) == 0
    trace = []
    assert torch.count_nonzero(fixup(digits(), trace)) == 0
    assert all(torch.count_nonzero(f) == 0 for _, f in trace)


def test_scaled_weight_standardisation():
    """Each output channel's weight has mean 0 and (biased) variance γ²/N over its fan-in N, whatever the
    raw weight's scale and shift; its gain scales it; and γ = √2/√(1 − 1/π) is the gain that makes γ·relu(z)
    of unit variance for z ~ N(0, 1) (by quadrature)."""
    conv = ScaledWSConv2d(6, groups=2, eps=0.0).double()
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(3.0)
    w = conv.standardised().detach().flatten(1)  # (6, 3·9)
    fan_in = w.shape[1]
    assert torch.allclose(w.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(w.var(1, correction=0), torch.full((6,), RELU_GAIN**2 / fan_in, dtype=torch.float64))
    with torch.no_grad():
        conv.gain[1] = 2.0
    assert torch.allclose(conv.standardised()[1], 2 * w[1].view(3, 3, 3))
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    first = integrate.quad(lambda z: z * phi(z), 0, math.inf)[0]
    second = integrate.quad(lambda z: z * z * phi(z), 0, math.inf)[0]
    assert math.isclose(RELU_GAIN**2 * (second - first**2), 1.0, rel_tol=1e-9)


def test_the_normaliser_free_nets_betas_and_its_signal():
    """β_l = √(1 + l·α²): the stream's expected std from a unit-variance stem. Measured at initialisation on a
    large batch, the stream's variance follows 1 + l·α² to within a factor 1.5 (the zero padding of 3×3
    convolutions on 4×4 maps leaves some taps out, so each branch adds less than α²: 0.71 to 0.79 of it here)
    and grows at every block."""
    assert nf_betas(3, 0.2) == [1.0, math.sqrt(1.04), math.sqrt(1.08)] and NF_ALPHA == 0.2
    net = ResNet("nf", 0, depth=12, width=16, dtype=torch.float64)
    trace = []
    net(digits(512).double(), trace)
    var = [x.var().item() for x, _ in trace]
    assert all(1 / 1.5 < v / (1 + block * NF_ALPHA**2) < 1.5 for block, v in enumerate(var))
    assert all(b > a for a, b in zip(var, var[1:], strict=False))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_grouped_net_is_its_members_side_by_side(variant):
    """Member k of ResNet(variant, seeds) computes exactly what ResNet(variant, seeds[k]) does on the same
    input, in training mode (batch norm on each member's own statistics) and after a step."""
    seeds = [3, 5]
    grouped, alone = ResNet(variant, seeds, depth=3), [ResNet(variant, s, depth=3) for s in seeds]
    x = digits(8)
    out = grouped(x.unsqueeze(1).expand(-1, 2, -1, -1, -1))
    for k, net in enumerate(alone):
        torch.testing.assert_close(out[:, k], net(x), rtol=1e-5, atol=1e-5)


def test_every_variant_shares_the_draws_of_its_seed():
    """The stem and the branches' first convolutions are the same draws in every variant at a seed (Fixup
    rescales them; Scaled WS standardises them on use)."""
    nets = {v: ResNet(v, 11, depth=4) for v in VARIANTS}
    for v, net in nets.items():
        assert torch.equal(net.stem.weight, nets["plain"].stem.weight), v
        scale = fixup_scale(4) if v == "fixup" else 1.0
        assert torch.equal(net.convs[2].weight, nets["plain"].convs[2].weight * scale), v


def test_unknown_variants_and_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown variant 'batch'"):
        ResNet("batch")
    with pytest.raises(ValueError, match="expects"):
        ResNet("plain", [0, 1])(digits())
