"""Two variants of batch norm that change which statistics a training step normalises with, written as
``MyBN`` subclasses: the same parameters, buffers and state dict (each loads into and from
``nn.BatchNorm1d``/``nn.BatchNorm2d``), the same eval mode (the running estimates), and the same
hand-written backward underneath.

Batch Renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models", Algorithm 1), per channel, over a minibatch of m values::

    μ_B = (1/m) Σ x_i                            σ_B = sqrt((1/m) Σ (x_i − μ_B)² + ε)
    r = stop_gradient(clip_[1/r_max, r_max](σ_B / σ))
    d = stop_gradient(clip_[−d_max, d_max]((μ_B − μ) / σ))
    x̂_i = (x_i − μ_B) / σ_B · r + d             y_i = γ x̂_i + β
    μ := μ + α(μ_B − μ),   σ := σ + α(σ_B − σ)      (α: the moving averages' update rate)
    inference: y = γ (x − μ) / σ + β

r and d correct the batch's statistics towards the running ones, so that training sees (within the
clips) what inference will; they are constants in the backward. With r = 1 and d = 0 it is batch
norm. Here γ·x̂ with x̂ = x̂_B·r + d is batch norm with gamma γ·r and beta β + γ·d: ``MyBN``'s own
forward and backward run with those, and autograd carries their gradients back to γ and β (r and d
detached). One departure, for the state dict: the running estimates are ``MyBN``'s (the mean and the
*unbiased variance*, updated as ``nn.BatchNorm`` updates them), and σ is sqrt(running_var + ε), where
the paper averages σ_B itself; inference is then exactly ``nn.BatchNorm``'s. The paper warms up: r_max
= 1 and d_max = 0 for the first 5,000 steps, then relaxed to r_max = 3 by 40,000 steps and d_max = 5
by 25,000 (``warmup``).

Ghost batch norm (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better", §4): in training,
the batch is cut into "ghost" batches of ``ghost_batch_size`` along dim 0, each normalised with its own
statistics, exactly as ``MyBN`` run on each in turn: the running estimates take one update per ghost
batch, in order; a last ghost batch of one value per channel joins the one before it. Eval mode is ``MyBN``'s.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from my_bn.function import accumulation_dtype
from my_bn.hints import Device
from my_bn.layer import MyBN
from my_bn.reference import stat_dims, values_per_channel


class MyBatchRenorm(MyBN):
    """Batch Renormalization over a 2D or 3D input (see the module docstring); loads into and from
    ``nn.BatchNorm1d``. ``MyBN``'s arguments, less ``sync``, and:

    Args:
        r_max: the clip of r, at least 1. Default: 3.0 (the paper's)
        d_max: the clip of d, at least 0. Default: 5.0 (the paper's)
        warmup: ``(hold, r_end, d_end)``: r_max = 1 and d_max = 0 for the first ``hold`` training steps
            (``num_batches_tracked``), then linear to ``r_max`` at step ``r_end`` and ``d_max`` at step
            ``d_end``; the paper's are (5000, 40000, 25000). Default: (0, 0, 0), no warm-up
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Device = None, dtype: torch.dtype | None = None, *,
                 bias: bool = True, r_max: float = 3.0, d_max: float = 5.0, warmup: tuple[int, int, int] = (0, 0, 0),
                 backend: str | None = None) -> None:
        if not track_running_stats:
            raise ValueError(f"{type(self).__name__} corrects towards the running estimates: it needs "
                             "track_running_stats=True")
        if not (_is_real(r_max) and _is_real(d_max) and r_max >= 1 and d_max >= 0):
            raise ValueError(f"{type(self).__name__}: r_max must be a number at least 1 and d_max a number at least "
                             f"0, got {r_max!r}, {d_max!r}")
        warmup = tuple(warmup) if isinstance(warmup, (tuple, list)) else (warmup,)
        if not (len(warmup) == 3 and all(_is_count(s) for s in warmup) and min(warmup[1:]) >= warmup[0]):
            raise ValueError(f"{type(self).__name__}: warmup must be three steps (hold, r_end, d_end), integers "
                             f"from 0 with the ramps ending no earlier than the hold, got {warmup!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         backend=backend)
        self.r_max, self.d_max, self.warmup = r_max, d_max, warmup

    supports_sync = False  # r and d from the local batch would not match the global statistics

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup={self.warmup}"

    def limits(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(r_max, d_max) for this step, after ``num_batches_tracked`` steps, as tensors (torch.func and
        torch.compile see no Python number read off a buffer)."""
        hold, r_end, d_end = self.warmup
        step = self.num_batches_tracked.to(dtype)

        def relaxed(end: int, start: float, final: float) -> Tensor:
            if end <= hold:  # no ramp: the final value from the end of the hold
                return torch.where(step < hold, start, final).to(dtype)
            return start + (final - start) * ((step - hold) / (end - hold)).clamp(0, 1)

        return relaxed(r_end, 1.0, self.r_max), relaxed(d_end, 0.0, self.d_max)

    def correction(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """r and d of this batch, per channel (C,), detached: the batch's σ_B and μ_B against the running σ and μ."""
        acc = accumulation_dtype(x)
        dims, _ = stat_dims(x)
        var, mean = torch.var_mean(x.detach().to(acc), dims, correction=0)  # (C,)
        # 1/σ and 1/σ_B by rsqrt: on the CPU torch.sqrt is MKL's vector sqrt, whose last bit depends on the CPU
        inv_sigma = torch.rsqrt(self.running_var.to(acc) + self.eps)  # (C,)
        r_max, d_max = self.limits(acc)
        r = (inv_sigma / torch.rsqrt(var + self.eps)).clamp(1 / r_max, r_max)  # σ_B / σ
        d = ((mean - self.running_mean.to(acc)) * inv_sigma).clamp(-d_max, d_max)
        return r, d

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy) or not self.training:
            return super().forward(x)  # eval: MyBN's, on the running estimates
        weight, bias = self.weight, self.bias
        self._check_input(x, (weight, bias, self.running_mean, self.running_var), True)  # before the statistics below
        if x.numel() == 0:  # no statistics to correct: MyBN's empty batch (zero gradients), where r and d are NaN
            return self._forward(x, weight, bias)
        r, d = self.correction(x)
        dtype = x.dtype if weight is None else weight.dtype
        r, d = r.to(dtype), d.to(dtype)
        gamma = r if weight is None else weight * r  # γ·r
        shift = d if weight is None else weight * d  # γ·d
        return self._forward(x, gamma, shift if bias is None else bias + shift)


class MyBatchRenorm2d(MyBatchRenorm, nn.BatchNorm2d):
    """:class:`MyBatchRenorm` over a 4D input (N, C, H, W); loads into and from ``nn.BatchNorm2d``."""

    _input_dims = (4,)


class MyGhostBN(MyBN):
    """Ghost batch norm over a 2D or 3D input (see the module docstring); loads into and from
    ``nn.BatchNorm1d``. ``MyBN``'s arguments, less ``sync``, and ``ghost_batch_size``: the size of the
    ghost batches each training batch is cut into along dim 0 (the last may be smaller; see ``ghost_sizes``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Device = None, dtype: torch.dtype | None = None, *,
                 bias: bool = True, ghost_batch_size: int, backend: str | None = None) -> None:
        if not (_is_count(ghost_batch_size) and ghost_batch_size >= 1):
            raise ValueError(f"{type(self).__name__}: ghost_batch_size must be a positive integer, got "
                             f"{ghost_batch_size!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         backend=backend)
        self.ghost_batch_size = ghost_batch_size

    supports_sync = False  # one collective per ghost batch: processes with unequal shares would fall out of step

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy) or not self.training or x.dim() < 1 or x.size(0) <= self.ghost_batch_size:
            return super().forward(x)
        return torch.cat([MyBN.forward(self, ghost) for ghost in x.split(self.ghost_sizes(x))])

    def ghost_sizes(self, x: Tensor) -> list[int]:
        """The sizes of the ghost batches along dim 0: ``ghost_batch_size`` each, the last one the rest; a rest
        of one value per channel (one row of a 2D input), which has no variance, joins the ghost batch before it."""
        whole, rest = divmod(x.size(0), self.ghost_batch_size)
        sizes = [self.ghost_batch_size] * whole + ([rest] if rest else [])
        if rest and values_per_channel(x[:rest]) == 1:
            sizes[-2:] = [sizes[-2] + rest]
        return sizes


def _is_count(value) -> bool:
    """An integer, not a bool (True is an int to Python, and would be taken as 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class MyGhostBN2d(MyGhostBN, nn.BatchNorm2d):
    """:class:`MyGhostBN` over a 4D input (N, C, H, W); loads into and from ``nn.BatchNorm2d``."""

    _input_dims = (4,)
