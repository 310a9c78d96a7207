"""lab/diagnostics.py: saturation and percentiles on known inputs; the probe's hooks change nothing."""

import numpy as np
import pytest
import torch

from lab import diagnostics, loop, regression
from lab.data import make_dataset
from lab.nets import TanhMLP


def test_saturation_and_percentiles_on_known_inputs():
    net = TanhMLP("plain", seed=0)
    diag = diagnostics.Diagnostics(net)
    gen = torch.Generator().manual_seed(0)
    z = [torch.randn(32, 10, generator=gen) * scale for scale in (0.5, 1.0, 3.0, 10.0)]
    z[0][:, :] = 0.0
    z[0][:8, :] = 2.7  # |tanh(2.7)| = 0.991 > 0.99: exactly a quarter saturated
    z[0][8:12, :] = 2.6  # |tanh(2.6)| = 0.989: not saturated
    for i, zi in enumerate(z):
        diag._keep(i, zi)
    for block in net.blocks:
        block.linear.weight.grad = torch.full_like(block.linear.weight, 0.5)
    diag.record(step=7)
    out = diag.results()
    assert out["step"] == [7]
    sat = out["saturation"][0]
    assert sat[0] == pytest.approx(0.25)
    for i, zi in enumerate(z):
        expected = (zi.abs() > np.arctanh(0.99)).float().mean().item()
        assert sat[i] == pytest.approx(expected, rel=1e-5)
        pct = [15, 50, 85]
        np.testing.assert_allclose(out["layer_q"][0][i], np.percentile(zi.numpy(), pct), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["unit_q"][0][i], np.percentile(zi[:, diagnostics.UNIT].numpy(), pct), rtol=1e-5)
    # the Frobenius norm of a 10 x d_in matrix of 0.5s
    expected_norms = [0.5 * (10 * block.linear.in_features) ** 0.5 for block in net.blocks]
    np.testing.assert_allclose(out["grad_norm"][0], expected_norms, rtol=1e-5)


def test_diagnostics_hooks_are_removed_and_ignore_eval():
    net = TanhMLP("torch_bn", seed=0)
    diag = diagnostics.Diagnostics(net)
    net.eval()
    net(torch.randn(5, 1))
    assert diag.latest == [None] * 4  # evaluation passes are not the training batch
    diag.results()
    net.train()
    net(torch.randn(5, 1))
    assert diag.latest == [None] * 4  # hooks gone


@pytest.mark.parametrize("model", ["plain", "my_bn", "plain_std_xy"])
def test_diagnostics_do_not_change_training(model):
    data = make_dataset(5, seed=2)
    order = loop.BatchOrder(1000, 64, epochs=2, seed=2)
    net = TanhMLP(model, 2)
    with_diag = regression.train_one(net, data, order, lr=0.02, probes=[diagnostics.Diagnostics(net)])
    without = regression.train_one(TanhMLP(model, 2), data, order, lr=0.02)
    assert "diagnostics" in with_diag and "diagnostics" not in without
    for key in ("train_loss", "test_mse", "predictions"):
        assert with_diag[key] == without[key], key  # exactly the same floats
    steps = with_diag["diagnostics"]["step"]
    assert steps == [*range(1, 17), 32]  # every step of epoch 1, then the last step of each epoch
