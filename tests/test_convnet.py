"""The conv net of the batch-size experiment and its data: scikit-learn's 8×8 digits split by digit,
one network definition for every norm, and MyBN2d in lock-step with nn.BatchNorm2d in float64."""

import math

import pytest
import torch
from torch import nn

from bn_pytorch import ConvNet
from data import DIGITS_TEST_PER_CLASS, digits_split


def test_the_digits_split_is_stratified_disjoint_and_fixed_by_seed():
    x_train, y_train, x_test, y_test = digits_split(0)
    assert x_train.shape == (1297, 1, 8, 8) and x_test.shape == (500, 1, 8, 8)
    assert torch.equal(torch.bincount(y_test), torch.full((10,), DIGITS_TEST_PER_CLASS))
    assert 0 <= x_train.min() and x_train.max() == 1.0  # grey levels 0..16, divided by 16
    rows = {tuple(r.flatten().tolist()) for r in x_train}
    assert sum(tuple(r.flatten().tolist()) in rows for r in x_test) < 5  # the set has a few duplicate images
    assert all(torch.equal(a, b) for a, b in zip(digits_split(0), (x_train, y_train, x_test, y_test), strict=True))
    assert not torch.equal(digits_split(1)[2], x_test)


def test_every_norm_starts_from_the_same_he_initialised_weights():
    nets = {norm: ConvNet(norm, seed=3) for norm in ConvNet.NORMS}
    weights = {norm: [c.weight for c in net.convs] + [net.head.weight] for norm, net in nets.items()}
    for norm in ConvNet.NORMS:
        assert all(torch.equal(a, b) for a, b in zip(weights["plain"], weights[norm], strict=True)), norm
    second = nets["plain"].convs[1].weight
    assert abs(second.std().item() - math.sqrt(2 / (16 * 9))) < 0.01  # He: sqrt(2 / fan-in)
    x = torch.randn(6, 1, 8, 8)
    for norm, net in nets.items():
        out = net(x)
        out.sum().backward()
        assert out.shape == (6, 10) and all(p.grad is not None for p in net.parameters()), norm
    with pytest.raises(ValueError, match="unknown norm"):
        ConvNet("batch_norm")


def test_mybn2d_and_batchnorm2d_conv_nets_stay_together_in_float64():
    """Forty SGD steps on batches of 32 digits, then eval: the two nets' losses, weights and running
    statistics agree to float64 rounding, so every result of the conv net with MyBN2d is one for
    nn.BatchNorm2d too."""
    x_train, y_train, x_test, _ = digits_split(0)
    nets = {m: ConvNet(m, seed=0, dtype=torch.float64) for m in ("torch_bn", "my_bn")}
    opts = {m: torch.optim.SGD(net.parameters(), lr=0.1) for m, net in nets.items()}
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    for step in range(40):
        idx = order[step * 32:(step + 1) * 32]
        x, y = x_train[idx].double(), y_train[idx]
        losses = {}
        for m, net in nets.items():
            loss = nn.functional.cross_entropy(net(x), y)
            opts[m].zero_grad()
            loss.backward()
            opts[m].step()
            losses[m] = loss.item()
        assert math.isclose(losses["torch_bn"], losses["my_bn"], rel_tol=1e-10), step
    for a, b in zip(nets["torch_bn"].state_dict().values(), nets["my_bn"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    out = {m: net.eval()(x_test.double()) for m, net in nets.items()}
    torch.testing.assert_close(out["torch_bn"], out["my_bn"], rtol=1e-9, atol=1e-12)
