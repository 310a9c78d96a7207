"""The noisy experiment: Santurkar et al.'s non-stationary noise has the distribution their Algorithm 1 states;
the verdict at each budget."""

import torch

from lab.nets import NonStationaryNoise


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


def test_the_longer_budget_on_a_tiny_configuration(tmp_path):
    """The nets the verdict compares train again for the longer budget, kept apart (``longer``); the verdict
    has each part at each budget, the manipulation check's first epoch at the preset's only (it is the same
    epoch), and nothing of the check where the ics runs lack the budget; the results load back."""
    from experiments import ics, noisy
    from helpers import round_trip

    config = noisy.NoisySettings(seeds=[0, 1], epochs=1, long_epochs=[2], workers=1)
    results = {"experiment": "noisy", **noisy.run(config, log=lambda _: None)}
    assert len(results["runs"]) == 2 * 4 * 2 and list(results["longer"]) == ["2"]
    assert {(r["range"][1], r["model"], r["epochs"]) for r in results["longer"]["2"]} == {
        (5.0, "plain", 2), (5.0, "my_bn", 2), (5.0, "my_bn_noisy", 2)}
    loaded = round_trip(results, tmp_path)
    shift = {"experiment": "ics", **ics.run(ics.IcsSettings(seeds=[0, 1], epochs=1, long_epochs=[2], workers=1,
                                                            ranges=[5.0]), log=lambda _: None)}
    (row,) = noisy.EXPERIMENT.verdicts(loaded, shift)
    readings = ("‖G − G′‖/‖G‖", "input shift")
    assert [p.label for p in row.parts] == [
        "the noise takes half the gain (1 epochs)",
        *(f"the noise raises MyBN's ICS, {w}, {k} (1 epochs)" for w in ("first epoch", "whole run") for k in readings),
        "the noise takes half the gain (2 epochs)",
        *(f"the noise raises MyBN's ICS, whole run, {k} (2 epochs)" for k in readings)]
    assert noisy.manipulation({**shift, "longer": {}}, 2) == {}  # the ics runs lack that budget: no check there
    table = noisy.noisy_table(loaded)
    assert "Trained 2 epochs (the nets the verdict compares, on (-5, 5))" in table and table.count("×") >= 2
