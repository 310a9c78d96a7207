"""Diagnostics, control variants and the range sweep (train.py, lab/nets.py, lab/data.py)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import train
from lab import diagnostics, loop, regression
from lab.data import make_dataset, spread_noise_std
from lab.nets import CONTROLS, VARIANTS, TanhMLP
from my_bn import MyBN


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


def test_control_variants_are_built_as_described():
    assert set(CONTROLS) == {"plain_std_x", "plain_std_y", "plain_std_xy", "plain_center_y", "plain_scale_y",
                             "bn_first", "bn_last", "layer_norm"}
    bn_first, bn_last, layer_norm = (TanhMLP(name, seed=1) for name in ("bn_first", "bn_last", "layer_norm"))
    assert isinstance(bn_first.blocks[0].norm, MyBN)
    assert all(isinstance(block.norm, nn.Identity) for block in bn_first.blocks[1:])
    assert isinstance(bn_last.blocks[3].norm, MyBN)
    assert all(isinstance(block.norm, nn.Identity) for block in bn_last.blocks[:3])
    assert all(type(block.norm) is nn.LayerNorm and block.norm.normalized_shape == (10,) for block in layer_norm.blocks)
    plain = TanhMLP("plain", seed=1)
    for name in ("plain_std_x", "plain_std_y", "plain_std_xy", "plain_center_y", "plain_scale_y"):
        net = TanhMLP(name, seed=1)  # the plain net itself: only the data is scaled
        assert all(
            torch.equal(a, b) for a, b in zip(net.state_dict().values(), plain.state_dict().values(), strict=True)
        )


def test_scaling_applies_and_undoes_standardisation():
    data = make_dataset(5, seed=0, dtype=torch.float64)
    s = regression.Scaling.for_variant(VARIANTS["plain_std_xy"], data)
    x, y = s.x(data.x_train), s.y(data.y_train)
    assert x.mean().item() == pytest.approx(0, abs=1e-12) and x.std().item() == pytest.approx(1)
    assert y.mean().item() == pytest.approx(0, abs=1e-12) and y.std().item() == pytest.approx(1)
    torch.testing.assert_close(s.y_back(y), data.y_train)
    assert regression.Scaling.for_variant(VARIANTS["plain_std_x"], data).y_std == 1.0
    assert regression.Scaling.for_variant(VARIANTS["plain"], data) == regression.Scaling()
    centred, scaled = (regression.Scaling.for_variant(VARIANTS[v], data) for v in ("plain_center_y", "plain_scale_y"))
    assert (centred.y_mean, centred.y_std) == (s.y_mean, 1.0) and (scaled.y_mean, scaled.y_std) == (0.0, s.y_std)
    assert centred.x_std == scaled.x_std == 1.0

    # the test MSE is taken in the units of y: a net that predicts 0 in scaled units predicts the mean of y
    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    mse, pred = regression.evaluate(Zero(), data.x_test, data.y_test, s)
    torch.testing.assert_close(pred, torch.full_like(pred, data.y_train.mean().item()))
    torch.testing.assert_close(mse, ((data.y_test - data.y_train.mean()) ** 2).mean())


def test_standardised_targets_report_losses_in_units_of_y():
    data = make_dataset(5, seed=0)
    order = loop.BatchOrder(1000, 1000, epochs=1, seed=0)  # one full batch: the loss is easy to recompute
    net = TanhMLP("plain_std_y", seed=0)
    start = TanhMLP("plain_std_y", seed=0)
    result = regression.train_one(net, data, order, lr=0.02)
    s = regression.Scaling.for_variant(VARIANTS["plain_std_y"], data)
    with torch.no_grad():
        expected = nn.functional.mse_loss(s.y_back(start(data.x_train[order[0][0]])), data.y_train[order[0][0]])
    assert result["train_loss"][0] == pytest.approx(expected.item(), rel=1e-5)


def test_sweep_smoke_run(tmp_path):
    argv = ["sweep", "--ranges", "1", "3", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert results["experiment"] == "sweep" and results["config"]["noise_scaled"] == 0.1
    assert not results["config"]["diagnostics"]
    assert {d["range"][1]: d["noise_std"] for d in results["datasets"]} == {1.0: 0.1, 3.0: pytest.approx(0.9)}
    assert {run["model"] for run in results["runs"]} == {"plain", "torch_bn", "my_bn"}
    assert not (tmp_path / "results.json").exists()  # only the experiment asked for


def test_spread_noise_keeps_signal_to_noise_fixed():
    ratios = []
    for r in (0.5, 2.0, 10.0):
        d = make_dataset(r, seed=0, noise_std=spread_noise_std(r, 0.1), dtype=torch.float64)
        ratios.append((d.y_train - d.y_train.mean()).std().item() / d.noise_std)
    assert max(ratios) / min(ratios) < 1.1


def test_help_documents_experiments_and_flags():
    text = train.make_parser().format_help()
    for word in ("controls", "sweep", "float64", "--noise-scaled", "--no-diagnostics", "--models"):
        assert word in text, word
