"""``batch_norm``: batch norm as a function of the input, the running estimates, γ and β, in the spirit of
``torch.nn.functional.batch_norm``, and the one place that decides which code computes it. ``MyBN``'s
forward checks its input and its state, counts the step, and calls it.

Which code runs, in order:

- an empty input: nothing to normalise (γ and β get zero gradients), as PyTorch's;
- eval mode with running estimates: ``eval_forward``, y = (x − running_mean)/sqrt(running_var + ε)·γ + β;
- training, or eval without running estimates: the batch's statistics, by
  - the C++ backend (``my_bn/cpp.py``), where ``backend="cpp"`` and ``cpp.handles`` the call, in one call
    that updates the running estimates too;
  - else ``batch_norm_train`` (``my_bn/function.py``), whose ``BatchNormFunction`` runs the reference,
    or for a large input or a batch spread over processes the versions of ``my_bn/fast.py``
    (``fast.path_for``); the running estimates are then updated here (``update_running``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from my_bn import cpp, settings
from my_bn.function import accumulation_dtype, batch_norm_train, transformed
from my_bn.hints import ProcessGroup
from my_bn.reference import channels


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None,
               bias: Tensor | None, training: bool, momentum: float | None, eps: float, *,
               num_batches_tracked: Tensor | None = None, backend: str = "python",
               process_group: ProcessGroup | None = None) -> Tensor:
    """Batch norm of ``x`` (N, C, *). In training, or where ``running_mean`` and ``running_var`` are None,
    with the batch's statistics, and the running estimates, where given, move towards them in place by
    ``momentum`` (None: 1/``num_batches_tracked``, a cumulative average, counting this step); else with
    the running estimates. ``process_group``: a group of several processes whose shares of the batch are
    normalised together (``fast.sync_group``), or None. ``backend``: ``"python"`` or ``"cpp"``."""
    if x.numel() == 0 and process_group is None:  # nothing to normalise; weight and bias get zero gradients
        x = x.clone() if weight is None else x * channels(weight, x)
        return x if bias is None else x + channels(bias, x)
    if not training and not (running_mean is None and running_var is None):
        return eval_forward(x, running_mean, running_var, weight, bias, eps)
    update = training and not (running_mean is None and running_var is None)
    running = (running_mean, running_var) if update else (None, None)
    in_cpp = backend == "cpp" and process_group is None and not settings.REFERENCE_ONLY and cpp.handles(
        x, weight, bias, *running)
    # float64 for C++, which takes a double (1/n exactly, as nn.BatchNorm1d's); else the statistics' dtype
    dtype = torch.float64 if in_cpp else accumulation_dtype(x)
    factor = momentum_factor(momentum, num_batches_tracked, dtype) if update else 0.0
    if in_cpp:
        return cpp.train(x, weight, bias, *running, float(factor), eps)  # one call
    y, mean, var = batch_norm_train(x, weight, bias, eps, process_group=process_group)
    if running_mean is not None and update:
        # mean and var come out of the graph (non-differentiable): no graph grows through the buffers
        update_running(running_mean, mean, factor)
        update_running(running_var, var, factor)  # the unbiased variance
    return y


def momentum_factor(momentum: float | None, num_batches_tracked: Tensor | None, dtype: torch.dtype) -> float | Tensor:
    """The weight of this batch in the running estimates: ``momentum``, or 1/num_batches_tracked for a
    cumulative average (``momentum=None``), as a tensor of ``dtype``, so that torch.compile compiles it once."""
    if momentum is not None:
        return momentum
    return 0.0 if num_batches_tracked is None else num_batches_tracked.to(dtype).reciprocal()


def eval_forward(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
                 bias: Tensor | None, eps: float) -> Tensor:
    """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta."""
    acc = accumulation_dtype(x)
    xa = x.to(acc)
    scale = torch.rsqrt(running_var.to(acc) + eps)  # (C,)
    if weight is not None:
        scale = scale * weight.to(acc)
    xc = xa - channels(running_mean.to(acc), xa)  # (N, C, *)
    if bias is None:
        return (xc * channels(scale, xa)).to(x.dtype)
    return torch.addcmul(channels(bias.to(acc), xa), xc, channels(scale, xa)).to(x.dtype)


def update_running(running: Tensor, batch: Tensor, factor: float | Tensor) -> None:
    """running <- (1 - factor) * running + factor * batch, accumulated in ``batch``'s dtype, as PyTorch
    writes it: an infinite estimate stays inf (torch.lerp's running + factor * (batch - running) is NaN)."""
    if running.dtype == batch.dtype and not transformed(batch):
        running.mul_(1 - factor)
        if isinstance(factor, Tensor):  # momentum=None: 1/num_batches_tracked, as a tensor
            running.add_(batch * factor)
        else:
            running.add_(batch, alpha=factor)
    else:  # out of place, which vmap also has a batching rule for
        running.copy_(running.to(batch.dtype) * (1 - factor) + batch * factor)
