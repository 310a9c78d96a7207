"""lab/loop.py: the batch order, epoch by epoch; precise statistics."""

import pytest
import torch

from lab import loop
from lab.data import digits_split
from lab.loop import precise_statistics
from lab.nets import ConvNet


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


def test_class_batch_order_draws_each_batch_from_few_classes():
    """Labels 0 ×6, 1 ×4, 2 ×5; batches of 4 from 2 classes: chunks of 2, three of class 0, two of 1, two
    of 2 (its fifth input left out), seven chunks, so three batches (one chunk left out); each batch two
    chunks of one class each, no input twice in an epoch; reshuffled each epoch, the same for a seed."""
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 5)
    order = loop.ClassBatchOrder(labels, 4, epochs=3, seed=0, classes=2)
    assert len(order) == 3
    for epoch in order:
        assert [len(b) for b in epoch] == [4, 4, 4]
        flat = torch.cat(epoch)
        assert len(flat.unique()) == 12  # no input twice
        for batch in epoch:
            chunks = batch.split(2)
            assert all(len(labels[c].unique()) == 1 for c in chunks)  # each chunk one class
            assert len(labels[batch].unique()) <= 2
    assert [torch.equal(a, b) for a, b in zip(order[0], loop.ClassBatchOrder(labels, 4, 3, 0, 2)[0], strict=True)] \
        == [True] * 3
    assert not torch.equal(torch.cat(order[0]), torch.cat(order[1]))
    one = loop.ClassBatchOrder(labels, 4, epochs=1, seed=1, classes=1)[0]  # chunks of 4: one of 0, 1 and 2 each
    assert sorted(labels[b].unique().item() for b in one) == [0, 1, 2]
    digits = digits_split()[1]
    batches = loop.ClassBatchOrder(digits, 32, epochs=1, seed=0, classes=2)[0]
    assert all(len(b) == 32 and len(digits[b].unique()) <= 2 for b in batches)


@pytest.mark.parametrize("norm", ["my_bn", "renorm", "ghost", "torch_bn"])
def test_precise_statistics_normalise_the_training_set_exactly(norm):
    """With precise statistics, each norm layer's eval-mode output over the training set has mean 0 and
    variance 1 per channel (γ = 1, β = 0 at initialisation; ε aside), at every depth, every member; the
    net itself keeps its running estimates."""
    x = digits_split(0)[0][:300].double()
    net = ConvNet(norm, [0, 1], dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    precise = precise_statistics(net, x)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    outputs = []
    hooks = [layer.register_forward_hook(lambda _, __, out: outputs.append(out)) for layer in precise.norms]
    with torch.no_grad():
        precise(x.unsqueeze(1).expand(-1, 2, *x.shape[1:]))
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 3
    for z in outputs:
        assert z.mean((0, 2, 3)).abs().max() < 1e-9
        assert (z.var((0, 2, 3), correction=1) - 1).abs().max() < 1e-3  # ε = 1e-5 against variances of order 0.1
    plain = ConvNet("group_norm", [0, 1], dtype=torch.float64)  # no running estimates: the same net
    assert all(torch.equal(a, b) for a, b in zip(precise_statistics(plain, x).state_dict().values(),
                                                  plain.state_dict().values(), strict=True))
