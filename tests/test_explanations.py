"""The measurements of the "which explanation holds" experiments, each on a tiny case whose answer is
known; and the probes leave training exactly as it would have been."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from experiments import ics, landscape, lr, running_stats
from lab.data import make_dataset
from lab.diagnostics import Diagnostics
from lab.loop import BatchOrder
from lab.nets import NonStationaryNoise, TanhMLP
from lab.probe import preserved
from lab.regression import Regression, Scaling, train_one, train_run

SMALL = Regression(ranges=[5.0], seeds=[0], epochs=2, diagnostics=False)


def step_state(model: str = "my_bn", optimizer: str = "adam", lr_: float = 0.02, dtype=torch.float32):
    """A net with this step's gradient on a batch, and its optimiser after one earlier step."""
    net = TanhMLP(model, 0, dtype=dtype).train()
    data = make_dataset(5.0, 0, dtype=dtype)
    x, y = data.x_train[:64], data.y_train[:64]
    opt = torch.optim.Adam(net.parameters(), lr=lr_) if optimizer == "adam" else torch.optim.SGD(net.parameters(), lr_)
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    opt.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    return net, opt, x, y


def snapshot(net, opt) -> list[torch.Tensor]:
    state = [v for d in opt.state.values() for v in d.values() if isinstance(v, torch.Tensor)]
    return [t.clone() for t in (*net.parameters(), *(p.grad for p in net.parameters()), *net.buffers(), *state)]


def test_ics_is_zero_when_the_lower_layers_do_not_move():
    net, _, x, y = step_state(optimizer="sgd")
    still = torch.optim.SGD(net.parameters(), lr=0.0)
    measures = ics.ics_of(net, x, y, still)
    assert measures["l2"] == [0.0, 0.0, 0.0] and measures["dmean"] == [0.0] * 3 and measures["dstd"] == [0.0] * 3
    assert all(abs(c - 1) < 1e-6 for c in measures["cos"])
    moving = ics.ics_of(net, x, y, torch.optim.SGD(net.parameters(), lr=0.1))
    assert all(v > 0 for v in moving["l2"]) and all(v > 0 for v in moving["dmean"])


def test_ics_counts_only_the_layers_below():
    """With only the top block and the head moving, no block's G′ differs from G (the blocks below it
    are still), though training moves."""
    net, _, x, y = step_state(optimizer="sgd")
    top = [*net.blocks[-1].parameters(), *net.head.parameters()]
    rest = [p for p in net.parameters() if all(p is not q for q in top)]
    opt = torch.optim.SGD([{"params": top, "lr": 0.5}, {"params": rest, "lr": 0.0}])
    assert ics.ics_of(net, x, y, opt)["l2"] == [0.0, 0.0, 0.0]


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


def test_noise_has_the_stated_distribution():
    """Per step μ ~ U(-0.5, 0.5), σ ~ U(1, 1.25); per sample m ~ U(μ ± 0.1), s ~ N(σ, 0.1): over many
    steps m has mean 0 and variance 1/12 + 0.2²/12, s mean 1.125 and variance 0.25²/12 + 0.1²."""
    noise = NonStationaryNoise(50, seed=0)
    draws = [noise.draw(20, torch.float64) for _ in range(400)]
    s = torch.stack([d[0] for d in draws])  # (steps, samples, units)
    m = torch.stack([d[1] for d in draws])
    assert abs(m.mean()) < 0.01 and abs(m.var() - (1 / 12 + 0.04 / 12)) < 0.005
    assert abs(s.mean() - 1.125) < 0.005 and abs(s.var() - (0.0625 / 12 + 0.01)) < 0.001
    per_step = m.mean(1)  # (steps, units): μ of each step and unit, up to the per-sample spread
    assert per_step.min() > -0.62 and per_step.max() < 0.62 and per_step.std(0).mean() > 0.25
    assert (s.mean(1) > 0.9).all() and (s.mean(1) < 1.35).all()
    a = torch.randn(20, 50, dtype=torch.float64)
    assert torch.equal(noise.eval()(a), a)  # eval adds nothing
    first, again = NonStationaryNoise(5, seed=3).train(), NonStationaryNoise(5, seed=3).train()
    assert torch.equal(first(torch.ones(4, 5)), again(torch.ones(4, 5)))  # its own generator: reproducible


def test_landscape_measures_on_a_quadratic():
    """A linear model under MSE: the loss along θ − ηg is a parabola, and ∇L(θ) − ∇L(θ − ηg) = η·H·g,
    so the effective β-smoothness is ‖H·g‖ / ‖g‖ exactly, whatever η."""
    torch.manual_seed(0)
    net = nn.Linear(1, 1).double()
    x = torch.randn(64, 1, dtype=torch.float64)
    y = 3 * x + 1
    loss = nn.functional.mse_loss(net(x), y)
    loss.backward()
    g = torch.cat([net.weight.grad.flatten(), net.bias.grad])
    h = 2 * torch.tensor([[x.square().mean(), x.mean()], [x.mean(), 1.0]], dtype=torch.float64)
    etas = [0.01, 0.05, 0.1]
    out = landscape.landscape_of(net, x, y, None, etas)
    assert math.isclose(out["beta"], (h @ g).norm().item() / g.norm().item(), rel_tol=1e-9)
    expected = [loss.item() - e * g.dot(g).item() + e**2 / 2 * g @ h @ g for e in etas]
    assert math.isclose(out["loss_min"], min(expected), rel_tol=1e-9)
    assert math.isclose(out["loss_max"], max(expected), rel_tol=1e-9)
    assert math.isclose(out["gdiff_max"], max(etas) * (h @ g).norm().item(), rel_tol=1e-9)


def test_divergence_detection_flags_a_run_that_blows_up():
    calm = {"train_loss": [3.0, 2.0], "test_mse": [5.0, 4.0, 1.0]}
    assert not lr.diverged(calm)
    assert lr.diverged({**calm, "train_loss": [3.0, float("inf")]})
    assert lr.diverged({**calm, "test_mse": [5.0, float("nan"), float("nan")]})
    assert lr.diverged({**calm, "test_mse": [5.0, 4.0, 6.0]})  # ends worse than it began
    runs = [r for r in lr.train_members(SMALL, (5.0, "plain")) if r["optimizer"] == "sgd"]
    top = [run_ for run_ in runs if run_["lr"] == max(lr.GRIDS["sgd"])]  # the top of the SGD grid blows up at once
    assert top and all(lr.diverged(run_) for run_ in top)
    assert not lr.diverged(next(run_ for run_ in runs if run_["lr"] == min(lr.GRIDS["sgd"])))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("model", ["plain", "my_bn"])
def test_ensemble_trains_each_member_as_alone(optimizer, model):
    """The vmap ensemble of the lr grid (both optimisers, side by side) against train_run, one cell at a
    time, in float64."""
    config = dataclasses.replace(SMALL, dtype="float64", epochs=1)
    members = [m for m in lr.train_members(config, (5.0, model)) if m["optimizer"] == optimizer]
    for lr_ in (lr.GRIDS[optimizer][0], lr.GRIDS[optimizer][2]):
        alone = train_run(dataclasses.replace(config, optimizer=optimizer, lr=lr_), (5.0, model, 0))
        together = next(m for m in members if m["lr"] == lr_)
        torch.testing.assert_close(torch.tensor(together["test_mse"]), torch.tensor(alone["test_mse"]), rtol=1e-9,
                                   atol=0)
        torch.testing.assert_close(torch.tensor(together["train_loss"]), torch.tensor(alone["train_loss"]), rtol=1e-9,
                                   atol=0)


def test_one_step_ratio_starts_at_one():
    ratios = lr.one_step_ratios(SMALL, 5.0, "my_bn", 0)
    assert len(ratios) == len(lr.ALPHAS) and abs(ratios[0] - 1) < 1e-3 and min(ratios) < 1


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
