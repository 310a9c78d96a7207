"""The running_stats experiment (experiments/running_stats.py): the three ways of evaluating a batch-norm net."""

import math

import torch
from torch import nn

from experiments import running_stats
from lab.data import make_dataset
from lab.nets import TanhMLP
from lab.regression import Scaling


def test_running_stats_modes():
    """Precise statistics of a net whose running statistics are already the training set's are its
    running statistics; training mode on the test set normalises with the test set's; the net is
    left as it was."""
    data = make_dataset(5.0, 0)
    net = TanhMLP("my_bn", 0)
    for layer in net.modules():
        if hasattr(layer, "momentum"):
            layer.momentum = 1.0
    net.train()(data.x_train)  # running statistics := the training set's
    before = [t.clone() for t in net.state_dict().values()]
    (modes,) = running_stats.test_mse_by_mode(net, data, Scaling())
    assert all(torch.equal(a, b) for a, b in zip(before, net.state_dict().values(), strict=True))
    assert math.isclose(modes["running"], modes["precise"], rel_tol=1e-6)
    with torch.no_grad():
        by_hand = nn.functional.mse_loss(net.train()(data.x_test), data.y_test).item()
    assert math.isclose(modes["train_mode"], by_hand, rel_tol=1e-6)
