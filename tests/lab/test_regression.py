"""lab/regression.py: the data scaling of the control variants, and losses in the units of y."""

import pytest
import torch
from torch import nn

from lab import loop, regression
from lab.data import make_dataset
from lab.nets import MLP_MODELS, TanhMLP


def test_scaling_applies_and_undoes_standardisation():
    data = make_dataset(5, seed=0, dtype=torch.float64)
    s = regression.Scaling.for_model(MLP_MODELS["plain_std_xy"], data)
    x, y = s.x(data.x_train), s.y(data.y_train)
    assert x.mean().item() == pytest.approx(0, abs=1e-12) and x.std().item() == pytest.approx(1)
    assert y.mean().item() == pytest.approx(0, abs=1e-12) and y.std().item() == pytest.approx(1)
    torch.testing.assert_close(s.y_back(y), data.y_train)
    assert regression.Scaling.for_model(MLP_MODELS["plain_std_x"], data).y_std == 1.0
    assert regression.Scaling.for_model(MLP_MODELS["plain"], data) == regression.Scaling()
    centred, scaled = (regression.Scaling.for_model(MLP_MODELS[v], data) for v in ("plain_center_y", "plain_scale_y"))
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
    s = regression.Scaling.for_model(MLP_MODELS["plain_std_y"], data)
    with torch.no_grad():
        expected = nn.functional.mse_loss(s.y_back(start(data.x_train[order[0][0]])), data.y_train[order[0][0]])
    assert result["train_loss"][0] == pytest.approx(expected.item(), rel=1e-5)
