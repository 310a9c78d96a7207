"""Batch norm in training mode, as the math: the forward, the backward and the forward-mode derivative.

For each channel c of x (N, C) or (N, C, L, ...), over its M = N·L values::

    mean = Σx / M                       the batch mean
    xc   = x - mean                     the centred input
    var  = Σxc² / M                     the biased variance: what the output is normalised with
    invstd = 1 / sqrt(var + eps)
    x̂    = xc · invstd                  the normalised input: mean 0, variance 1 (up to eps)
    y    = gamma · x̂ + beta             the layer's output

and backwards, from dy = ∂L/∂y::

    dbeta  = Σdy
    dgamma = Σ dy · x̂
    dx̂     = dy · gamma
    dx     = invstd / M · (M·dx̂ - Σdx̂ - x̂ · Σ dx̂·x̂)
           = gamma · invstd · (dy - (Σdy + x̂ · Σ dy·x̂) / M)

dx has three terms because each x moves y through its own x̂, and through the mean and the variance
that every x̂ of its channel shares. Each line of the functions below is one line of these formulas,
named as they name it, with two refinements, each a named step: the statistics are taken in two
passes and corrected (``centred_statistics``), and where gamma multiplies x̂ the code multiplies xc by
gamma · invstd instead (one multiplication per value rather than two). ``tests/my_bn/test_reference.py``
holds these functions to autograd through the plain formulas and to PyTorch's kernel.

``my_bn/function.py`` runs them as a ``torch.autograd.Function``; ``my_bn/layer.py`` is the module.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class Cache(NamedTuple):
    """What the backward needs from the forward. Per-channel tensors are shaped to broadcast against
    x: (C,) for (N, C) input, (1, C, 1, ...) for (N, C, L, ...)."""

    xc: Tensor  # x - mean                          (N, C, *)
    invstd: Tensor  # 1 / sqrt(var + eps)           (C,)
    scale: Tensor  # gamma / sqrt(var + eps)        (C,)


def batchnorm_forward(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float
                      ) -> tuple[Tensor, Tensor, Tensor, Cache]:
    """y = (x - mean) / sqrt(var + eps) · gamma + beta, per channel, with the statistics of the batch.

    Returns ``(y, mean, var, cache)``: the output, the batch mean and biased variance per channel
    (shaped as in ``Cache``), and what ``batchnorm_backward`` needs. gamma and beta are (C,), or
    None for 1 and 0.
    """
    mean, xc, var = centred_statistics(x)  # mean, x - mean, Σ(x - mean)²/M   (C,), (N, C, *), (C,)
    invstd = torch.rsqrt(var + eps)  # 1 / sqrt(var + eps)
    # x̂ = xc · invstd and y = gamma · x̂ + beta, as y = xc · (gamma · invstd) + beta
    scale = invstd if gamma is None else invstd * channels(gamma, x)  # gamma · invstd
    y = xc * scale if beta is None else torch.addcmul(channels(beta, x), xc, scale)  # (N, C, *)
    return y, mean, var, Cache(xc, invstd, scale)


def batchnorm_backward(dy: Tensor, cache: Cache) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dgamma, dbeta)`` from dy = ∂L/∂y (the shape of x), by the formulas of the module docstring."""
    xc, invstd, scale = cache
    dims, keep = stat_dims(dy)
    m = values_per_channel(dy)
    dbeta = dy.sum(dims, keepdim=keep)  # Σdy
    dgamma = (dy * xc).sum(dims, keepdim=keep) * invstd  # Σ dy·x̂, with x̂ = xc · invstd
    shared = torch.addcmul(dbeta, xc, invstd * dgamma)  # Σdy + x̂ · Σ dy·x̂: through the mean and the variance
    dx = torch.add(dy, shared, alpha=-1 / m) * scale  # gamma · invstd · (dy - shared / M)   (N, C, *)
    return dx, flat(dgamma), flat(dbeta)


def batchnorm_jvp(tx: Tensor | None, tgamma: Tensor | None, tbeta: Tensor | None, cache: Cache) -> Tensor:
    """The forward-mode derivative: ẏ, how y moves when x, gamma and beta move by ẋ, γ̇ and β̇
    (each may be None, for no change):

    ẏ = gamma / sqrt(var + eps) · (ẋ - mean(ẋ) - x̂·mean(x̂·ẋ)) + γ̇·x̂ + β̇

    the backward's formula read the other way: ẋ moves x̂ directly, through the mean (mean(ẋ)) and
    through the variance (mean(x̂·ẋ)). The means run over a channel's M values.
    """
    xc, invstd, scale = cache
    xhat = xc * invstd  # (N, C, *)
    if tx is None:
        ty = torch.zeros_like(xc)
    else:
        dims, keep = stat_dims(tx)
        ty = (tx - tx.mean(dims, keepdim=keep) - xhat * (xhat * tx).mean(dims, keepdim=keep)) * scale
    if tgamma is not None:
        ty = torch.addcmul(ty, xhat, channels(tgamma, xc))
    return ty if tbeta is None else ty + channels(tbeta, xc)


def centred_statistics(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean, x - mean, var)`` per channel, shaped as in ``Cache``: the corrected two-pass algorithm
    (Chan, Golub & LeVeque, 1983).

    Why not var = E[x²] - E[x]²: it loses every digit when |mean| >> std. So the variance is taken of
    x - Σx/M, centred first. Σx/M is itself rounded; the mean of the residuals x - Σx/M (zero in
    exact arithmetic) is its error, which corrects the mean and the centred input. Σx is summed in
    float64, which cannot overflow for float32 values (near ±3e38 a float32 sum would) and gives the
    exact mean of a constant channel, whose residuals are then exactly 0 (at 1e30 they would otherwise
    square to inf). Σx/M is one number per channel, subtracted from every value of the channel alike.
    """
    dims, keep = stat_dims(x)
    first = x.mean(dims, keepdim=keep, dtype=torch.float64).to(x.dtype)  # Σx/M, summed in float64
    residual = x - first  # x - Σx/M                                                         (N, C, *)
    var, err = torch.var_mean(residual, dims, correction=0, keepdim=keep)  # err = mean(x - Σx/M)
    err = err.nan_to_num(0.0, 0.0, 0.0)  # an inf in x makes err NaN: no correction, mean = Σx/M (inf, as PyTorch's)
    return first + err, residual - err, var


# Shapes. Each of these saves an operator call for (N, C) input, where a call costs more than the
# arithmetic: a (C,) vector already broadcasts against (N, C).


def stat_dims(x: Tensor) -> tuple[int | list[int], bool]:
    """The dimensions each channel's statistics run over (all but dim 1), and whether to keep them."""
    return (0, False) if x.dim() == 2 else ([0, *range(2, x.dim())], True)


def channels(v: Tensor, x: Tensor) -> Tensor:
    """A (C,) vector shaped to broadcast against x: (1, C, 1, ...), or as it is for (N, C)."""
    return v if x.dim() == 2 else v.view(1, -1, *([1] * (x.dim() - 2)))


def flat(v: Tensor) -> Tensor:
    """A per-channel tensor as (C,)."""
    return v if v.dim() == 1 else v.view(-1)


def values_per_channel(x: Tensor) -> int:
    """M = N · L: how many values each channel's statistics are taken over."""
    return x.size(0) if x.dim() == 2 else x.size(0) * math.prod(x.shape[2:])
