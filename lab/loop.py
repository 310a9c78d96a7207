"""The training loop the experiments share: batches in a seeded order, the optimiser, the steps (of one
net, or of a ``ConvNet``'s members at once), a cosine schedule and each member's accuracy.

Every run is deterministic: its data, initial weights and batch order come from its seed, and the
thread count is fixed, so which process trains it changes nothing in the results.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from lab.data import N_TRAIN
from lab.nets import ConvNet
from lab.probe import Probe, loop


class BatchOrder(Sequence):
    """Index batches for every epoch, reshuffled each epoch, shared by all nets of one seed.

    Each epoch's order is drawn when the epoch starts, so memory does not grow with the number of
    epochs; iterating again replays the same orders from the seed. A final batch of a single sample
    is merged into the one before it: batch norm cannot take statistics over one value per channel.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, seed: int):
        self.n, self.batch_size, self.epochs, self.seed = n, batch_size, epochs, seed

    def __len__(self) -> int:
        return self.epochs

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            batches = list(torch.randperm(self.n, generator=gen).split(self.batch_size))
            if len(batches) > 1 and len(batches[-1]) == 1:
                batches[-2:] = [torch.cat(batches[-2:])]
            yield batches

    def __getitem__(self, epoch: int) -> list[torch.Tensor]:
        """Epoch ``epoch``'s batches (drawn again through the epochs before it)."""
        if not -self.epochs <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch} of {self.epochs}")
        return next(itertools.islice(self, epoch % self.epochs, None))


class ClassBatchOrder(BatchOrder):
    """Non-i.i.d. batches: each drawn from at most ``classes`` classes, ``batch_size // classes`` inputs of
    each, after Ioffe 2017 ("Batch Renormalization", introduction): "for a minibatch of size 32, we may
    randomly select 16 labels, then choose 2 examples for each of these labels", the kind of batch on which
    batch norm's training comes to depend on the batch's make-up. With ten classes, 16 labels a batch would
    cover nearly every class; few classes a batch, many inputs of each, is the reading this takes.

    Each epoch, each class's inputs are shuffled and cut into chunks of ``batch_size // classes`` (a
    shorter rest is left out that epoch); the chunks are shuffled and joined ``classes`` at a time into
    batches (a rest of fewer chunks is left out). Two chunks of one batch may share a class."""

    def __init__(self, labels: torch.Tensor, batch_size: int, epochs: int, seed: int, classes: int):
        super().__init__(len(labels), batch_size, epochs, seed)
        self.labels, self.classes = labels, classes
        self.per = batch_size // classes

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        members = [(self.labels == c).nonzero().squeeze(1) for c in self.labels.unique()]  # in class order
        for _ in range(self.epochs):
            chunks = [chunk for idx in members for chunk in idx[torch.randperm(len(idx), generator=gen)].split(self.per)
                      if len(chunk) == self.per]
            chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()]
            whole = len(chunks) - len(chunks) % self.classes
            yield [torch.cat(chunks[i:i + self.classes]) for i in range(0, whole, self.classes)]


def steps_per_epoch(batch_size: int, n: int = N_TRAIN) -> int:
    """The optimiser steps of one epoch of ``n`` training inputs in batches of ``batch_size`` (``BatchOrder``'s)."""
    return len(BatchOrder(n, batch_size, 1, 0)[0])


def make_optimizer(name: str, net: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam (the experiments' default), or plain SGD: no momentum, the step is exactly -lr·gradient."""
    if name == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr, foreach=True)
    return torch.optim.Adam(net.parameters(), lr=lr, fused=True)  # one kernel per step, not ~10 per tensor


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # loss to differentiate, loss to record, x, y


def fit(net: nn.Module, opt: torch.optim.Optimizer, order: Iterable[list[torch.Tensor]],
        batch_loss: Callable[[torch.Tensor], Batch], probes: Sequence[Probe] = (),
        after_epoch: Callable[[int], None] | None = None) -> list[torch.Tensor]:
    """The training loop (``probe.loop``) of one net: for each epoch's batches (index tensors),
    ``batch_loss(idx)`` gives the loss to differentiate, the batch's loss to record, and the batch (x, y);
    backward, the probes that want this step (``probe.Probe``), the optimiser's step. After each epoch
    ``after_epoch(epoch)`` (1 for the first), then the probes'. Returns each step's recorded loss
    (tensors: no host sync)."""

    def prepare(idx: torch.Tensor):
        loss, recorded, x, y = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return x, y, opt, opt.step, recorded.detach()

    return loop(order, prepare, probes, after_epoch, before_epoch=net.train)


def fit_members(net: ConvNet, opt: torch.optim.Optimizer, x_train: torch.Tensor, y_train: torch.Tensor,
                batch_size: int, epochs: int, lr: Callable[[int], float] | None = None, probes: Sequence[Probe] = (),
                after_epoch: Callable[[int], None] | None = None,
                order: Callable[[int], BatchOrder] | None = None) -> list[torch.Tensor]:
    """``fit`` for a ``ConvNet`` of K members side by side (one seed each): each step member k trains on
    its own batch, drawn by the ``BatchOrder`` of its seed (``order(seed)``, where given: another order of
    the same batch size and length, ``ClassBatchOrder``'s) (the members share no parameter, so the sum of
    their losses gives each its own gradient). ``lr(t)``: the rate of step t (from 0), set before it;
    None: the optimiser's own. Returns each step's losses, (K,) per step."""
    order = order or (lambda s: BatchOrder(len(x_train), batch_size, epochs, s))
    orders = [order(s) for s in net.seeds]
    per_epoch = ([torch.stack(b) for b in zip(*epoch, strict=True)] for epoch in zip(*orders, strict=True))
    counter = itertools.count()

    def batch_loss(idx: torch.Tensor):  # idx (K, B): each member's batch
        t = next(counter)
        for group in opt.param_groups if lr is not None else ():
            group["lr"] = lr(t)
        x, y = x_train[idx].transpose(0, 1), y_train[idx].T  # (B, K, C, H, W), (B, K)
        losses = ConvNet.member_losses(net(x), y)  # (K,)
        return losses.sum(), losses, x, y

    return fit(net, opt, per_epoch, batch_loss, probes, after_epoch)


def cosine(lr: float, steps: int) -> Callable[[int], float]:
    """The cosine schedule from ``lr`` at step 0 towards 0 at step ``steps``."""
    return lambda t: lr * (1 + math.cos(math.pi * t / steps)) / 2


@torch.no_grad()
def precise_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``net`` (a ``ConvNet`` or a ``lab.resnets.ResNet``: its ``norms`` in forward order) whose norm
    layers' running estimates are the exact statistics of their inputs over ``x`` (the training set) under the
    final weights: layer by layer from the input, each computed in eval mode with the layers below it already
    precise, as Wu & Johnson 2021 ("Rethinking 'Batch' in BatchNorm", §3, "precise BatchNorm") recommend over
    the moving averages (which average statistics of weights that have since moved). The variance is the
    unbiased one, as the running estimates store it. One forward in eval mode over all of ``x``: each layer,
    reached, first takes its estimates from its input (the layers below it already precise), then normalises
    with them."""
    precise = copy.deepcopy(net).eval()
    inputs = x.unsqueeze(1).expand(-1, net.k, *x.shape[1:]) if net.grouped else x

    def take(layer: nn.Module, args: tuple) -> None:
        z = args[0].double().transpose(0, 1).flatten(1)  # (channels, N·H·W)
        layer.running_mean.copy_(z.mean(1))
        layer.running_var.copy_(z.var(1, correction=1))

    # a norm without running estimates (GroupNorm, LayerNorm) has nothing to make precise
    hooks = [layer.register_forward_pre_hook(take) for layer in precise.norms
             if getattr(layer, "running_mean", None) is not None]
    precise(inputs)
    for hook in hooks:
        hook.remove()
    return precise


@torch.no_grad()
def member_correct(net: ConvNet, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Which of (x, y) each member gets right, the same inputs for all: in eval mode, or with
    ``batch_size`` in training mode in batches of that size (the last takes what is left), on a copy of
    ``net`` so that its running estimates stay as they are. (N, K) bools."""
    model = copy.deepcopy(net).train() if batch_size else net.eval()
    chunks = x.split(batch_size or len(x))
    logits = torch.cat([model(c.unsqueeze(1).expand(-1, net.k, *c.shape[1:])) for c in chunks])  # (N, K, 10)
    net.train()
    return logits.argmax(-1) == y.unsqueeze(1)


def member_accuracy(net: ConvNet, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Each member's accuracy on (x, y) (``member_correct``'s fraction right). (K,)"""
    return member_correct(net, x, y, batch_size).double().mean(0)
