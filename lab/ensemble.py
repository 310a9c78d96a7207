"""Nets trained side by side: K members of one architecture as one set of stacked tensors.

Where an experiment trains many small nets (seeds, learning rates), the Python and dispatch
overhead of each step costs more than its arithmetic. ``Ensemble`` stacks the members' parameters and
buffers (``torch.func.stack_module_state``) and computes every member's gradient in one
``vmap(grad)`` call: each member still starts from its own initial weights, sees its own batches and
keeps its own batch-norm running statistics (the buffers are stacked too), exactly as a run of
``regression.train_one`` would, only rounded in another order.

The optimiser is written out over the stacked parameters, one learning rate and one optimiser per
member: plain SGD, or Adam with PyTorch's defaults (the same update as ``torch.optim.Adam``).
``torch.optim`` cannot do that: it takes one learning rate per parameter group, and a group per
member would unstack the tensors, and the ensemble with them.

Its loop, ``Ensemble.fit``, is ``training.fit``'s (``probe.loop``), with the same probes (``probe.Probe``):
``measure`` is given the ensemble in place of the optimiser, with this step's gradients in
``Ensemble.grads``; ``Ensemble.updated`` gives the parameters the step is about to produce, without
taking it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from lab.probe import Probe, loop

Params = dict[str, torch.Tensor]


class Ensemble:
    """``nets`` (one architecture, K members), trained at ``rates`` (one learning rate per member) with
    ``optimizers`` ("sgd" or "adam": one for all, or one per member) on ``loss_fn(output, target)``."""

    def __init__(self, nets: Sequence[nn.Module], rates: Sequence[float], optimizers: str | Sequence[str],
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.mse_loss):
        optimizers = [optimizers] * len(nets) if isinstance(optimizers, str) else list(optimizers)
        if not len(rates) == len(optimizers) == len(nets) or not set(optimizers) <= {"sgd", "adam"}:
            raise ValueError("one learning rate and one optimizer (sgd or adam) per net")
        self.base, self.k, self.loss_fn = nets[0], len(nets), loss_fn
        self.sgd = torch.tensor([o == "sgd" for o in optimizers])  # which members take plain SGD steps
        self.params, self.buffers = ({n: t.detach() for n, t in d.items()} for d in stack_module_state(list(nets)))
        dtype = next(iter(self.params.values())).dtype
        self.rates = torch.tensor(list(rates), dtype=dtype)
        self.moments = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in self.params.items()}
        self.t = 0  # optimiser steps taken
        self.grads: Params = {}
        self._gradients = vmap(grad_and_value(self._loss))

    def _loss(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(functional_call(self.base, (params, buffers), (x,)), y)

    def gradients(self, x: torch.Tensor, y: torch.Tensor, params: Params | None = None,
                  buffers: Params | None = None) -> tuple[Params, torch.Tensor]:
        """Each member's gradient and loss on its batch (x, y: K batches stacked), at ``params`` (default:
        the members' own). Batch norm runs in training mode and updates ``buffers`` (default: the
        members' own running statistics; pass copies to leave those alone)."""
        self.base.train()
        return self._gradients(self.params if params is None else params,
                               self.buffers if buffers is None else buffers, x, y)

    def _apply(self, params: Params, moments: dict, grads: Params, t: int) -> None:
        """The optimiser's step ``t`` (1 for the first), in place on ``params`` and ``moments``."""
        with torch.no_grad():
            for name, g in grads.items():
                lr = self.rates.view(self.k, *[1] * (g.dim() - 1))
                if self.sgd.all():
                    params[name] -= lr * g
                    continue
                m, v = moments[name]
                m.lerp_(g, 0.1)  # β1 = 0.9
                v.mul_(0.999).addcmul_(g, g, value=0.001)  # β2 = 0.999
                root = torch.rsqrt(v / (1 - 0.999**t)).reciprocal_()  # √v̂; torch.sqrt's last bit depends on the CPU
                adam = lr / (1 - 0.9**t) * m / root.add_(1e-8)
                params[name] -= adam if not self.sgd.any() else torch.where(self.sgd.view_as(lr), lr * g, adam)

    def step(self, grads: Params) -> None:
        """Take the optimiser's step with ``grads``."""
        self.t += 1
        self._apply(self.params, self.moments, grads, self.t)

    def updated(self, grads: Params) -> Params:
        """The parameters ``step(grads)`` would produce; nothing of the ensemble changes."""
        params = {n: p.clone() for n, p in self.params.items()}
        moments = {n: (m.clone(), v.clone()) for n, (m, v) in self.moments.items()}
        self._apply(params, moments, grads, self.t + 1)
        return params

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, shared: bool = False, module: nn.Module | None = None,
                 prefix: str = "") -> torch.Tensor:
        """Every member's output in eval mode (batch norm on its running statistics), on ``x``: one input
        per member (K first), or with ``shared`` one input for all. ``module``: a module to call in place
        of the net, one that holds it under the name ``prefix`` (its parameters are the net's)."""
        module = self.base if module is None else module
        params, buffers = ({prefix + n: t for n, t in d.items()} for d in (self.params, self.buffers))
        module.eval()
        try:
            return vmap(lambda p, b, x_: functional_call(module, (p, b), (x_,)),
                        in_dims=(0, 0, None if shared else 0))(params, buffers, x)
        finally:
            module.train()

    def fit(self, orders: Sequence[Sequence[list[torch.Tensor]]],
            batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], probes: Sequence[Probe] = (),
            after_epoch: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """``training.fit``'s loop for the ensemble: ``orders`` holds each member's batch order (index
        tensors per epoch, as ``training.BatchOrder`` gives them), ``batch(idx)`` the K batches (x, y) for
        the K members' indices ``idx`` (K, B). Returns each step's losses, (K,) per step."""
        epochs = ([torch.stack(indices) for indices in zip(*per_member, strict=True)]
                  for per_member in zip(*orders, strict=True))

        def prepare(idx: torch.Tensor):
            x, y = batch(idx)
            self.grads, value = self.gradients(x, y)
            return x, y, self, lambda: self.step(self.grads), value

        return loop(epochs, prepare, probes, after_epoch)
