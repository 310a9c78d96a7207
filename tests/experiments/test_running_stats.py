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


def test_the_experiment_on_a_tiny_configuration(tmp_path):
    """Both nets on both ranges for 2 epochs, and on (-5, 5) for 3 too (kept apart, by budget); the verdict's
    parts at each budget; the results load back, figure and table drawn from them."""
    from helpers import round_trip

    config = running_stats.RunningStatsSettings(seeds=[0, 1, 2], epochs=2, long_epochs=[3], workers=1)
    results = {"experiment": "running_stats", **running_stats.run(config, log=lambda _: None)}
    assert len(results["runs"]) == 2 * 2 * 3 and list(results["longer"]) == ["3"]
    assert {(r["range"][1], r["model"], r["epochs"]) for r in results["longer"]["3"]} == {
        (5.0, m, 3) for m in ("my_bn", "my_bn_m01")}
    assert all(len(r["running_stats"]["precise"]) == 4 for r in results["longer"]["3"])  # start, then each epoch
    loaded = round_trip(results, tmp_path)
    (row,) = running_stats.EXPERIMENT.verdicts(loaded)
    assert [p.budget for p in row.parts] == ["2 epochs"] * 3 + ["3 epochs"] * 3
    assert "Trained 3 epochs" in running_stats.EXPERIMENT.tables(loaded)["running-stats-table"]
    running_stats.plot_running_stats(loaded, tmp_path / "running_stats.png")
