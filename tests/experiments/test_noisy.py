"""The noisy experiment: Santurkar et al.'s non-stationary noise has the distribution their Algorithm 1 states."""

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
