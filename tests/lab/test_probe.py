"""lab/probe.py: a probe leaves training bit-identical, and ``preserved`` puts back what it moved."""

import dataclasses

import pytest
import torch

from experiments import ics, landscape, running_stats
from helpers import SMALL, snapshot, step_state
from lab.data import make_dataset
from lab.diagnostics import Diagnostics
from lab.loop import BatchOrder
from lab.nets import TanhMLP
from lab.probe import preserved
from lab.regression import train_one


@pytest.mark.parametrize("model", ["plain", "my_bn", "my_bn_noisy"])
@pytest.mark.parametrize("probe", [ics.ICSProbe, landscape.LandscapeProbe, running_stats.RunningStatsProbe])
def test_probes_leave_training_bit_identical(probe, model):
    """A run with a probe trains exactly as one without, the noisy net too (its noise generator is
    put back after the probe's forwards)."""
    config = dataclasses.replace(SMALL, optimizer="sgd" if probe is landscape.LandscapeProbe else "adam", lr=0.01)
    data = make_dataset(5.0, 0)
    order = BatchOrder(len(data.x_train), config.batch_size, config.epochs, 0)
    runs = []
    for watch in (None, probe):
        net = TanhMLP(model, 0)
        probes = [Diagnostics(net), *([watch(net, data, config)] if watch else [])]
        runs.append(train_one(net, data, order, config.lr, config.optimizer, probes))
    keys = ("test_mse", "train_loss", "predictions", "diagnostics")
    assert all(runs[0][k] == runs[1][k] for k in keys)
    assert probe.name in runs[1]


def test_preserved_puts_back_a_first_step():
    """An optimiser with no state yet (before its first step) has none after a probe's step either."""
    net = TanhMLP("my_bn", 0)
    net(torch.randn(8, 1)).sum().backward()
    opt = torch.optim.Adam(net.parameters())
    before = [t.clone() for t in (*net.parameters(), *net.buffers())]
    with preserved(net, opt):
        opt.step()
        net(torch.randn(8, 1))
    assert len(opt.state) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, (*net.parameters(), *net.buffers()), strict=True))
    net, opt, x, y = step_state()
    before = snapshot(net, opt)
    ics.ics_of(net, x, y, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(net, opt), strict=True))
