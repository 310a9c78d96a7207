"""lab/loop.py: the batch order, epoch by epoch."""

import pytest
import torch

from lab import loop


def test_batch_order_covers_every_sample_and_merges_a_last_single():
    order = loop.BatchOrder(1000, 64, epochs=3, seed=0)
    assert len(order) == 3
    for epoch in order:
        assert torch.equal(torch.cat(epoch).sort().values, torch.arange(1000))
    assert not torch.equal(torch.cat(order[0]), torch.cat(order[1]))  # reshuffled each epoch
    single = loop.BatchOrder(1000, 999, epochs=1, seed=0)[0]
    assert [len(b) for b in single] == [1000]
    assert [len(b) for b in loop.BatchOrder(10, 3, 1, 0)[0]] == [3, 3, 4]


def test_batch_order_is_drawn_epoch_by_epoch_with_the_same_numbers():
    """Memory does not grow with --epochs, and the orders are those drawn all at once before."""
    gen = torch.Generator().manual_seed(7)
    eager = [list(torch.randperm(1000, generator=gen).split(64)) for _ in range(3)]  # the former way
    huge = loop.BatchOrder(1000, 64, epochs=2_000_000, seed=7)
    assert len(huge) == 2_000_000
    for epoch, (ours, theirs) in enumerate(zip(huge, eager, strict=False)):  # the first three epochs
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), epoch
    assert [torch.equal(a, b) for a, b in zip(huge[2], eager[2], strict=True)] == [True] * 16
    with pytest.raises(IndexError):
        huge[2_000_000]
