"""MyBN: batch normalisation written by hand, an exact drop-in for ``torch.nn.BatchNorm1d``.

Nothing here calls PyTorch's batch-norm kernels: the statistics, the normalisation, the running
estimates and the backward pass are all written out below in plain tensor operations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MyBN", "MyBN2d", "convert_to_mybn", "batch_norm_train"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for half/bfloat16, as PyTorch does."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _reduce_dims(x: Tensor) -> list[int]:
    """Every dimension but the channel dimension 1 of an (N, C, *) tensor."""
    return [0, *range(2, x.dim())]


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """View a (C,) vector so that it broadcasts against an (N, C, *) tensor."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _values_per_channel(x: Tensor) -> int:
    """M = N * L: how many values each channel's statistics are taken over."""
    return x.size(0) * math.prod(x.shape[2:])


def _batch_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batch statistics of an (N, C, *) tensor by the corrected two-pass algorithm.

    Summing squares only after centring avoids the catastrophic cancellation of
    ``E[x**2] - E[x]**2`` when ``|mean| >> std``. The second pass also sums the residuals
    ``x - mean0`` and corrects the mean and the variance with them (Chan, Golub & LeVeque, 1983),
    which removes the rounding error of the first estimate ``mean0``.

    Returns ``(xc, xc_mean, mean, var)``: ``xc = x - mean0`` (N, C, *), centred on the first
    estimate, and its own small mean ``xc_mean`` (C,), so that ``x - mean == xc - xc_mean``;
    then the per-channel ``mean`` (C,) and biased variance ``var`` (C,).
    """
    dims = _reduce_dims(x)
    m = _values_per_channel(x)
    mean0 = x.sum(dims) / m  # (C,)
    xc = x - _per_channel(mean0, x)  # (N, C, *)
    xc_mean = xc.sum(dims) / m  # (C,), zero up to the rounding of mean0
    var = (xc * xc).sum(dims) / m - xc_mean * xc_mean  # (C,)
    return xc, xc_mean, mean0 + xc_mean, var


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm with a hand-written backward.

    Forward returns ``(y, mean, var)``; ``mean`` and the biased ``var`` are the batch statistics,
    returned (without gradient) so that the module can update its running estimates.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        xa = x.to(_acc_dtype(x.dtype))  # no copy unless x is half/bfloat16
        xc, xc_mean, mean, var = _batch_stats(xa)
        invstd = torch.rsqrt(var + eps)  # (C,)
        # y = (xc - xc_mean) * scale + beta with scale = gamma * invstd, as one addcmul.
        scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
        shift = -xc_mean * scale if bias is None else bias.to(xa.dtype) - xc_mean * scale
        y = torch.addcmul(_per_channel(shift, xa), xc, _per_channel(scale, xa))
        ctx.eps = eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(mean, var)
        return y.to(x.dtype), mean, var

    @staticmethod
    def backward(ctx, dy: Tensor | None, _dmean, _dvar):
        x, weight, mean, invstd = ctx.saved_tensors
        if dy is None:
            return None, None, None, None
        xa = x.to(_acc_dtype(x.dtype))
        if torch.is_grad_enabled():
            # create_graph=True: the statistics must be functions of x in the graph, so that
            # differentiating this backward again (double backward) sees how they depend on x.
            xc, xc_mean, _, var = _batch_stats(xa)
            xc = xc - _per_channel(xc_mean, xa)
            invstd = torch.rsqrt(var + ctx.eps)
        else:
            xc = xa - _per_channel(mean, xa)  # (N, C, *), recomputed: cheaper than storing it
        dya = dy.to(xa.dtype)
        dims = _reduce_dims(xa)
        m = _values_per_channel(xa)
        sum_dy = dya.sum(dims)  # (C,)  = dbeta
        sum_dy_xc = (dya * xc).sum(dims)  # (C,)  = dgamma / invstd
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            # dx = gamma * invstd / M * (M*dy - sum(dy) - xhat * sum(dy * xhat)), xhat = xc * invstd
            scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
            proj = invstd * invstd * sum_dy_xc / m  # (C,)
            dx = dya - _per_channel(sum_dy / m, xa) - xc * _per_channel(proj, xa)
            dx = (dx * _per_channel(scale, xa)).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            dweight = (sum_dy_xc * invstd).to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            dbias = sum_dy.to(ctx.bias_dtype)
        return dx, dweight, dbias, None


def batch_norm_train(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalise ``x`` (N, C, *) with its own batch statistics.

    Returns ``(y, mean, var)`` where ``mean`` and the biased ``var`` are the (C,) batch statistics,
    in float32 for half/bfloat16 input, detached from the graph.
    """
    return _BatchNormTrain.apply(x, weight, bias, eps)


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``x * gamma + beta`` per channel, with either one absent."""
    if weight is not None:
        x = x * _per_channel(weight, x)
    if bias is not None:
        x = x + _per_channel(bias, x)
    return x


class MyBN(nn.Module):
    r"""Batch normalisation over a 2D or 3D input, written by hand; a drop-in for ``nn.BatchNorm1d``.

    It exists so that every step of batch norm can be read in one file, and checked number for
    number against PyTorch's kernel, while behaving exactly like ``nn.BatchNorm1d`` everywhere:
    same constructor, parameters, buffers, state dict, train/eval semantics and errors.

    For each channel c, over the N (and L) values of a batch, with M = N·L values per channel:

    .. math::

        \mu = \frac{1}{M}\sum x, \qquad
        \sigma^2_B = \frac{1}{M}\sum (x - \mu)^2, \qquad
        y = \frac{x - \mu}{\sqrt{\sigma^2_B + \epsilon}} \cdot \gamma + \beta

    Two variances are in play. The output is normalised with the *biased* batch variance
    :math:`\sigma^2_B` (divide by M), while ``running_var`` is updated with the *unbiased* one,
    :math:`\sigma^2_B \cdot M / (M - 1)`. The running estimates follow

    .. math::

        \hat{\mu} \leftarrow (1 - \text{momentum})\,\hat{\mu} + \text{momentum}\,\mu

    (note: momentum weights the *new* batch, unlike an optimiser's momentum); with
    ``momentum=None`` the factor is ``1 / num_batches_tracked``, a cumulative average, and
    ``momentum=0`` freezes the estimates. In eval mode the running estimates replace the batch
    statistics, unless they are not tracked, in which case batch statistics are used there too.
    The backward pass is hand-written too (see ``_BatchNormTrain``):

    .. math::

        \frac{\partial L}{\partial x} = \frac{\gamma}{M\sqrt{\sigma^2_B + \epsilon}}
        \Big(M\,\frac{\partial L}{\partial y} - \sum \frac{\partial L}{\partial y}
        - \hat{x}\sum \frac{\partial L}{\partial y}\hat{x}\Big), \quad
        \frac{\partial L}{\partial \gamma} = \sum \frac{\partial L}{\partial y}\hat{x}, \quad
        \frac{\partial L}{\partial \beta} = \sum \frac{\partial L}{\partial y}

    Args:
        num_features: number of features or channels C of the input.
        eps: added to the variance before the square root. Default: 1e-5
        momentum: weight of the new batch in the running estimates; ``None`` for a cumulative
            average. Default: 0.1
        affine: learn a per-channel scale ``weight`` (gamma) and shift ``bias`` (beta).
            Default: ``True``
        track_running_stats: keep ``running_mean``/``running_var``/``num_batches_tracked``
            buffers and use them in eval mode; if ``False`` the buffers are ``None`` and batch
            statistics are used in both modes. Default: ``True``
        device, dtype: where and in which dtype parameters and buffers are created.
        bias: with ``affine``, also learn the shift ``bias``. Default: ``True``

    Shape:
        - Input: (N, C) or (N, C, L)
        - Output: same shape as the input

    Half and bfloat16 inputs are accumulated in float32 (parameters may be float32 or the input's
    dtype), and the output has the input's dtype.
    """

    _version = 2  # the state-dict version of nn.BatchNorm1d: num_batches_tracked exists

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory)) if bias else None
        else:
            self.weight = None
            self.bias = None
        if track_running_stats:
            # Buffers, not plain attributes: state_dict(), load_state_dict() and .to() carry them.
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, gamma to 1 and beta to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")

    def _check_input(self, x: Tensor, use_batch_stats: bool, use_running_stats: bool) -> None:
        """Raise the exception ``nn.BatchNorm1d`` raises for the same bad input, with a clearer message."""
        self._check_input_dim(x)
        if use_batch_stats and _values_per_channel(x) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        if use_batch_stats and self.eps <= 0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        if self.eps < 0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        per_channel = [self.weight, self.bias]
        if use_running_stats:
            per_channel += [self.running_mean, self.running_var]
        tensors = [t for t in per_channel if t is not None]
        if any(t.numel() != x.size(1) for t in tensors):
            raise RuntimeError(
                f"{type(self).__name__}({self.num_features}) expected input with "
                f"{self.num_features} channels in dim 1, got input of shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise NotImplementedError(f"{type(self).__name__} needs floating-point input, got {x.dtype}")
        for t in tensors:
            if t.dtype != x.dtype and not (x.dtype in _LOW_PRECISION and t.dtype == torch.float32):
                raise RuntimeError(
                    f"{type(self).__name__}: input dtype {x.dtype} does not match parameter/buffer dtype {t.dtype}"
                )

    def forward(self, x: Tensor) -> Tensor:
        # Batch statistics in training, and in eval when there are no running estimates to use.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        update_running = self.training and self.track_running_stats
        self._check_input(x, use_batch_stats, use_running_stats=update_running or not self.training)

        factor = 0.0
        if update_running and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum

        if x.numel() == 0:
            # Nothing to normalise; keep weight and bias in the graph so they get zero gradients.
            return _affine(x.clone(), self.weight, self.bias)

        if not use_batch_stats:
            return self._eval_forward(x)

        y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
        if update_running and self.running_mean is not None:
            m = _values_per_channel(x)
            with torch.no_grad():
                self._update_running(self.running_mean, mean, factor)
                self._update_running(self.running_var, var * (m / (m - 1)), factor)  # unbiased
        return y

    @staticmethod
    def _update_running(running: Tensor, batch: Tensor, factor: float) -> None:
        """running <- (1 - factor) * running + factor * batch, accumulated in ``batch``'s dtype."""
        running.copy_(running.to(batch.dtype).mul(1 - factor).add_(batch, alpha=factor))

    def _eval_forward(self, x: Tensor) -> Tensor:
        """Normalise with the running estimates.

        y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta
        """
        acc = _acc_dtype(x.dtype)
        xa = x.to(acc)
        scale = torch.rsqrt(self.running_var.to(acc) + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight.to(acc)
        xc = xa - _per_channel(self.running_mean.to(acc), xa)  # (N, C, *)
        if self.bias is None:
            y = xc * _per_channel(scale, xa)
        else:
            y = torch.addcmul(_per_channel(self.bias.to(acc), xa), xc, _per_channel(scale, xa))
        return y.to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        # Checkpoints older than version 2 have no num_batches_tracked; start it at 0, as PyTorch does.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)


class MyBN2d(MyBN):
    """:class:`MyBN` over a 4D input (N, C, H, W); a drop-in for ``nn.BatchNorm2d``.

    The math is :class:`MyBN`'s, with the statistics taken over N, H and W for each channel.

    Shape:
        - Input: (N, C, H, W)
        - Output: same shape as the input
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


def convert_to_mybn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` in ``module`` by ``MyBN``/``MyBN2d``.

    The new layers take over the old ones' parameters and buffers (the same tensors, so an
    optimiser built on the model keeps working), hence their device, dtype and values, and their
    train/eval mode. Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, it converts in place and
    returns the module, which is a new object only when ``module`` itself is a batch-norm layer.
    """
    kinds = {nn.BatchNorm1d: MyBN, nn.BatchNorm2d: MyBN2d}
    new_type = kinds.get(type(module))
    if new_type is not None:
        new = new_type(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device="meta",  # placeholders only; the real tensors are moved over below
            bias=module.bias is not None,
        )
        for name, param in module.named_parameters(recurse=False):
            setattr(new, name, param)
        for name, buf in module.named_buffers(recurse=False):
            setattr(new, name, buf)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_mybn(child))
    return module
