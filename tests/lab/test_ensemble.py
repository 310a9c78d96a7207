"""lab/ensemble.py: members trained side by side are the nets trained alone; ``updated`` takes no step."""

import pytest
import torch
from torch import nn

from lab.ensemble import Ensemble


def nets(k: int) -> list[nn.Module]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double())
    return out


def test_each_member_steps_as_torch_optim_steps_it_alone():
    """A mixed ensemble, SGD and Adam at their own rates: every member after three steps is the same
    net stepped alone by torch.optim (float64)."""
    gen = torch.Generator().manual_seed(0)
    members, alone = nets(3), nets(3)
    setup = [("sgd", 0.1), ("adam", 0.01), ("sgd", 0.5)]
    ensemble = Ensemble(members, [lr for _, lr in setup], [o for o, _ in setup])
    opts = [torch.optim.SGD(n.parameters(), lr=lr) if o == "sgd" else torch.optim.Adam(n.parameters(), lr=lr)
            for n, (o, lr) in zip(alone, setup, strict=True)]
    for _ in range(3):
        x, y = torch.randn(3, 8, 3, generator=gen, dtype=torch.float64), torch.randn(3, 8, 1, generator=gen,
                                                                                    dtype=torch.float64)
        grads, _ = ensemble.gradients(x, y)
        before = {n: p.clone() for n, p in ensemble.params.items()}
        after = ensemble.updated(grads)
        assert all(torch.equal(before[n], p) for n, p in ensemble.params.items())  # updated() took no step
        ensemble.step(grads)
        assert all(torch.equal(after[n], p) for n, p in ensemble.params.items())  # ... the one step() takes
        for i, (net, opt) in enumerate(zip(alone, opts, strict=True)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x[i]), y[i]).backward()
            opt.step()
    for i, net in enumerate(alone):
        for name, p in net.named_parameters():
            torch.testing.assert_close(ensemble.params[name][i], p, rtol=1e-12, atol=1e-12)


def test_a_learning_rate_and_an_optimiser_per_member():
    with pytest.raises(ValueError, match="one learning rate and one optimizer"):
        Ensemble(nets(2), [0.1], "sgd")
    with pytest.raises(ValueError, match="one learning rate and one optimizer"):
        Ensemble(nets(2), [0.1, 0.1], ["sgd", "rmsprop"])
