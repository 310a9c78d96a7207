"""The ics experiment (experiments/ics.py): internal covariate shift on tiny cases whose answer is known."""

import torch

from experiments import ics
from helpers import step_state


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
