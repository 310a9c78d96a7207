"""The one way to measure while a net trains: a ``Probe``, with a schedule of its own, called by the
one training loop (``loop``, which ``training.fit`` runs for a net and ``ensemble.Ensemble.fit`` for
nets trained side by side, handing the probe the ensemble in place of the optimiser), which knows no
particular measurement.

Each step of ``fit``: the forward and backward of a batch; every probe whose schedule ``wants`` the
step ``measure``s it (the gradients are this step's, the optimiser has not stepped); the optimiser's
step; then every probe is told the step was taken (``stepped``). After each epoch, ``epoch``; when
training ends, ``results`` goes into the run's results under the probe's ``name``. A probe that moves
the net to measure puts everything back (``preserved``): a run with probes trains exactly like one
without.

The probes: ``diagnostics.Diagnostics`` (tanh inputs, saturation and gradient norms per block),
``experiments/ics.ICSProbe``, ``experiments/landscape.LandscapeProbe``,
``experiments/running_stats.RunningStatsProbe``, ``experiments/scale.NormProbe`` and, on an ensemble,
``experiments/mnist.MnistProbe``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn


class Step(NamedTuple):
    """Where training is: the optimiser step about to be taken (1 for the first) in ``epoch`` (0 for
    the first), and whether it is that epoch's last."""

    number: int
    epoch: int
    last_of_epoch: bool


class Probe:
    """What an experiment measures while a net trains, beside the loss (see the module docstring)."""

    name = "probe"

    def wants(self, step: Step) -> bool:
        """Its schedule: whether it measures at ``step``."""
        return False

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """After the backward of batch (x, y), before the optimiser's step; the net must be left as it is."""

    def stepped(self, step: Step) -> None:
        """After the optimiser's step."""

    def epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (1 for the first) and its test."""

    def results(self) -> dict:
        """What it measured, for the run's results (called once, when training has ended)."""
        return {}


def loop(epochs: Iterable[Sequence], prepare: Callable[[Any], tuple], probes: Sequence[Probe] = (),
         after_epoch: Callable[[int], None] | None = None,
         before_epoch: Callable[[], None] | None = None) -> list:
    """The training loop: for each epoch's batches, ``prepare(batch)`` runs the batch's forward and
    backward and returns ``(x, y, holder, take, recorded)``: the batch, what a probe's ``measure`` is
    handed (the optimiser, or the ensemble), the optimiser's step still to take, and the loss to record.
    Then the probes that want this step measure, the step is taken, and every probe is told. Before
    each epoch ``before_epoch()``; after it ``after_epoch(epoch)`` (1 for the first), then the probes'.
    Returns each step's recorded loss."""
    losses, number = [], 0
    for epoch, batches in enumerate(epochs):
        if before_epoch is not None:
            before_epoch()
        for i, batch in enumerate(batches):
            x, y, holder, take, recorded = prepare(batch)
            number += 1
            step = Step(number, epoch, i == len(batches) - 1)
            for probe in probes:
                if probe.wants(step):
                    probe.measure(step, x, y, holder)
            take()
            losses.append(recorded)
            for probe in probes:
                probe.stepped(step)
        if after_epoch is not None:
            after_epoch(epoch + 1)
        for probe in probes:
            probe.epoch(epoch + 1)
    return losses


def every(n: int, step: Step) -> bool:
    """A schedule for ``Probe.wants``: steps 1, n + 1, 2n + 1, ...: the first step, then every ``n``-th."""
    return (step.number - 1) % n == 0


@contextlib.contextmanager
def preserved(net: nn.Module, opt: torch.optim.Optimizer | None = None):
    """Put back, on leaving, every parameter, gradient and buffer of ``net``, the optimiser's state, the
    state of the random generators its modules own (``lab.nets.NonStationaryNoise``'s), bit for bit,
    and the train/eval mode: what a probe does in between leaves no trace on training.

    Yields the parameters' values as they were (copies, in ``net.parameters()`` order; read them, do
    not change them: they are what is put back)."""
    params = list(net.parameters())
    tensors = [*params, *net.buffers()]
    grads = [p.grad for p in params]
    saved = [t.detach().clone() for t in tensors]
    saved_grads = [None if g is None else g.clone() for g in grads]
    clone = lambda v: v.clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
    state = None if opt is None else {p: {k: clone(v) for k, v in d.items()} for p, d in opt.state.items()}
    training = net.training
    generators = [(m.generator, m.generator.get_state()) for m in net.modules()
                  if isinstance(getattr(m, "generator", None), torch.Generator)]
    try:
        yield saved[: len(params)]
    finally:
        with torch.no_grad():
            for t, v in zip(tensors, saved, strict=True):
                t.copy_(v)
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
        if opt is not None:  # as it was, entries the probe added (a first step's) gone too
            opt.state.clear()
            opt.state.update(state)
        for generator, generator_state in generators:
            generator.set_state(generator_state)
        net.train(training)
