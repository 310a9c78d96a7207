"""The landscape experiment (experiments/landscape.py): its measures on a quadratic, whose answer is known."""

import math

import torch
from torch import nn

from experiments import landscape


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
