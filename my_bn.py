"""MyBN: batch normalisation written by hand, an exact drop-in for ``torch.nn.BatchNorm1d``.

Nothing here calls PyTorch's batch-norm kernels: the statistics, the normalisation, the running
estimates and the backward pass are all written out below in plain tensor operations.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["MyBN", "MyBN2d", "convert_to_mybn", "batch_norm_train"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are accumulated in: float32 for half/bfloat16, as PyTorch does."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` in ``dtype``; the same tensor, with no call into PyTorch, when it already is."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _reduce_dims(x: Tensor) -> int | list[int]:
    """Every dimension but the channel dimension 1 of an (N, C, *) tensor (an int is a little faster)."""
    return 0 if x.dim() == 2 else [0, *range(2, x.dim())]


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """View a (C,) vector so that it broadcasts against an (N, C, *) tensor (as it is for (N, C))."""
    return v if x.dim() == 2 else v.view(1, -1, *([1] * (x.dim() - 2)))


def _flat(v: Tensor) -> Tensor:
    """A per-channel vector shaped to broadcast against x, as (C,)."""
    return v if v.dim() == 1 else v.view(-1)


def _values_per_channel(x: Tensor) -> int:
    """M = N * L: how many values each channel's statistics are taken over."""
    return x.size(0) if x.dim() == 2 else x.size(0) * math.prod(x.shape[2:])


def _centre(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(xc, mean, var)`` of an (N, C, *) tensor by the corrected two-pass algorithm: the residuals
    ``xc = x - mean`` (N, C, *), and the per-channel ``mean`` and biased variance ``var``, both
    shaped to broadcast against x: (C,) for (N, C), (1, C, 1, ...) for more dimensions.

    Summing squares only after centring avoids the catastrophic cancellation of
    ``E[x**2] - E[x]**2`` when ``|mean| >> std``. The second pass takes the mean of the residuals
    ``x - mean0`` too and corrects with it (Chan, Golub & LeVeque, 1983), which removes the rounding
    error of the first estimate ``mean0``. The mean is kept in these two parts until the end:
    ``mean0`` alone is exact to no better than its own rounding, which in float32 can be a sizeable
    fraction of the standard deviation (mean 1e4, std 1e-2).
    """
    dims, m, keep = _reduce_dims(x), _values_per_channel(x), x.dim() > 2  # (C,) broadcasts against (N, C)
    total = x.sum(dims, keepdim=keep)
    xc = torch.sub(x, total, alpha=1 / m)  # x - mean0; a scalar passed as alpha costs no tensor
    var, xc_mean = torch.var_mean(xc, dims, correction=0, keepdim=keep)  # var(x), and mean0's rounding error
    return xc - xc_mean, torch.add(xc_mean, total, alpha=1 / m), var


def _scale(invstd: Tensor, weight: Tensor | None) -> Tensor:
    """The per-channel factor of the output, gamma / sqrt(var + eps), shaped like ``invstd``."""
    if weight is None:
        return invstd
    weight = _as(weight, invstd.dtype)
    return invstd * (weight if invstd.dim() == 1 else weight.view(invstd.shape))


def _forward_reference(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """The training forward as the docstring writes it; returns ``(y, xc, mean, var, invstd, scale)``:
    the residuals ``xc = x - mean``, the (C,) ``mean`` and biased ``var``, and ``invstd`` and
    ``scale = gamma * invstd`` shaped to broadcast against x, so that y = xc * scale + beta.

    Differentiable: the backward of a double backward runs it again to put the statistics in the graph.
    """
    xc, mean, var = _centre(x)
    invstd = torch.rsqrt(var + eps)
    scale = _scale(invstd, weight)
    y = xc * scale if bias is None else torch.addcmul(_per_channel(_as(bias, scale.dtype), x), xc, scale)
    return y, xc, _flat(mean), _flat(var), invstd, scale


def _forward_lean(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """``_forward_reference`` returning ``(y, mean, var, invstd)``, all (C,) but y: the backward
    recomputes the residuals from x instead of keeping a second tensor of x's size."""
    y, _, mean, var, invstd, _ = _forward_reference(x, weight, bias, eps)
    return y, mean, var, _flat(invstd)


def _grad_reference(dy: Tensor, xc: Tensor, invstd: Tensor, scale: Tensor, m: int):
    """dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)) with xhat = xc*invstd, xc = x - mean,
    for ``invstd`` and ``scale`` shaped to broadcast against dy.

    Returns ``(dx, dgamma, dbeta)``, dgamma = sum(dy*xhat) and dbeta = sum(dy), both (C,).
    Differentiable: with ``xc``, ``invstd`` and ``scale`` computed from ``x`` in the graph, autograd
    differentiates it again.
    """
    dims, keep = _reduce_dims(dy), dy.dim() > 2
    sum_dy = dy.sum(dims, keepdim=keep)
    dweight = (dy * xc).sum(dims, keepdim=keep) * invstd
    # dx = scale * (dy - (sum(dy) + xc * invstd * dgamma) / M)
    dx = torch.add(dy, torch.addcmul(sum_dy, xc, invstd * dweight), alpha=-1 / m) * scale
    return dx, _flat(dweight), _flat(sum_dy)


def _backward_reference(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None):
    """``_grad_reference`` from x and its (C,) statistics."""
    mean, invstd = _per_channel(mean, x), _per_channel(invstd, x)
    return _grad_reference(dy, x - mean, invstd, _scale(invstd, weight), _values_per_channel(x))


# The forward and backward again, for large inputs on the CPU in eager mode (the parity tests hold
# every version to PyTorch). There a large tensor costs more to allocate (page faults) and to stream
# through memory than to compute with, so these go through the batch a block of rows at a time: each
# pass reads its inputs once, works on the block in a small scratch buffer that stays in cache, and
# the only large tensor allocated is the output.
_BLOCK_ELEMS = 1 << 20  # 4 MiB of float32 per block: out of L2, but in L3
_SMALL_ELEMS = 1 << 14  # up to here (64 KiB of float32) the plain formula, with fewer operations, is faster
_ROW_GROUPS = 16  # _channel_sums sums this many groups of rows first; blocks hold a multiple of it


def _row_blocks(x: Tensor) -> list[slice]:
    """Slices of dim 0 holding about ``_BLOCK_ELEMS`` elements each, in whole groups of rows."""
    rows = max(1, _BLOCK_ELEMS // max(1, math.prod(x.shape[1:])))
    rows = max(_ROW_GROUPS, rows - rows % _ROW_GROUPS)
    return [slice(i, i + rows) for i in range(0, x.size(0), rows)]


def _channel_sums(block: Tensor) -> Tensor:
    """Per-channel sums of an (n, C, *) block that was just written.

    With several threads, an elementwise operation splits a block by rows, while a plain sum over
    dim 0 splits it by channels: each thread would then read rows that another core has just
    written (measured 3 to 12 times slower with two threads). So the sum is taken over the trailing
    dimensions first (within each row), then over groups of rows, each thread on rows it wrote.
    """
    if block.dim() > 2:
        block = block.sum(list(range(2, block.dim())))  # (n, C)
    n = block.size(0)
    if n > _ROW_GROUPS and n % _ROW_GROUPS == 0:
        block = block.view(_ROW_GROUPS, n // _ROW_GROUPS, block.size(1)).sum(1)  # (groups, C)
    return block.sum(0)


def _stats_blocked(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel ``(pivot, d_mean, var)`` of x in one pass: mean = pivot + d_mean, var biased.

    The statistics are those of ``_centre`` with the first block's mean as the shift: sums of
    ``d = x - pivot`` and ``d**2``, corrected by ``mean(d)``. The pivot is within sqrt(M/B)
    standard deviations of the mean (B of the M values per channel are in the first block), so the
    correction costs at most a factor M/B in the precision of the variance: nothing for one block.
    """
    dims = _reduce_dims(x)
    m = _values_per_channel(x)
    blocks = _row_blocks(x)
    pivot = x[blocks[0]].mean(dims)  # (C,)
    pivot_ = _per_channel(pivot, x)
    scratch = torch.empty_like(x[blocks[0]])
    s1 = s2 = 0
    for rows in blocks:
        d = torch.sub(x[rows], pivot_, out=scratch[: x[rows].size(0)])
        s1 = s1 + _channel_sums(d)
        s2 = s2 + _channel_sums(d.square_())
    d_mean = s1 / m  # (C,)
    return pivot, d_mean, s2 / m - d_mean * d_mean


def _scale_shift(invstd: Tensor, d_mean: Tensor, weight, bias) -> tuple[Tensor, Tensor]:
    """Per channel, y = (x - pivot - d_mean) * invstd * gamma + beta  ==  (x - pivot) * scale + shift."""
    scale = _scale(invstd, weight)
    shift = -d_mean * scale if bias is None else torch.addcmul(_as(bias, scale.dtype), d_mean, scale, value=-1)
    return scale, shift


def _normalize_blocked(x: Tensor, pivot: Tensor, d_mean: Tensor, var: Tensor, weight, bias, eps: float):
    """y = (x - pivot - d_mean) / sqrt(var + eps) * gamma + beta in one pass; returns ``(y, invstd)``."""
    invstd = torch.rsqrt(var + eps)
    scale, shift = _scale_shift(invstd, d_mean, weight, bias)
    pivot_, scale_, shift_ = (_per_channel(v, x) for v in (pivot, scale, shift))
    y = torch.empty_like(x)
    for rows in _row_blocks(x):  # y = (x - pivot) * scale + shift
        torch.addcmul(shift_, torch.sub(x[rows], pivot_, out=y[rows]), scale_, out=y[rows])
    return y, invstd


def _forward_blocked(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """``_forward_reference`` as one pass over x for the statistics and one that writes y."""
    pivot, d_mean, var = _stats_blocked(x)
    y, invstd = _normalize_blocked(x, pivot, d_mean, var, weight, bias, eps)
    return y, pivot + d_mean, var, invstd


def _grad_sums_blocked(dy: Tensor, x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` in one pass over (x, dy)."""
    blocks = _row_blocks(x)
    if not blocks:  # an empty share of a batch split over processes
        return x.new_zeros(x.size(1)), x.new_zeros(x.size(1))
    mean_ = _per_channel(mean, x)
    scratch = torch.empty_like(x[blocks[0]])
    sum_dy = sum_dy_xc = 0
    for rows in blocks:
        sum_dy = sum_dy + _channel_sums(dy[rows])
        xc = torch.sub(x[rows], mean_, out=scratch[: x[rows].size(0)])
        sum_dy_xc = sum_dy_xc + _channel_sums(xc.mul_(dy[rows]))
    return sum_dy, sum_dy_xc


def _grad_coefficients(x: Tensor, invstd: Tensor, weight: Tensor | None, sum_dy: Tensor, dweight: Tensor, m: int):
    """The formula for dx rearranged as ``dy * k1 + (x - mean) * k2 + k3`` with per-channel
    k1 = gamma*invstd, k2 = -k1*invstd*dgamma/M and k3 = -k1*sum(dy)/M, shaped for x."""
    scale = _scale(invstd, weight)
    k = scale / -m
    return _per_channel(scale, x), _per_channel(k * invstd * dweight, x), _per_channel(k * sum_dy, x)


def _grad_input_blocked(dy, x, mean, invstd, weight, sum_dy: Tensor, dweight: Tensor, m: int) -> Tensor:
    """dx from the per-channel sums over all M values (as in ``_grad_reference``), in one pass."""
    k1, k2, k3 = _grad_coefficients(x, invstd, weight, sum_dy, dweight, m)
    mean_ = _per_channel(mean, x)
    dx = torch.empty_like(x)
    for rows in _row_blocks(x):
        xc = torch.sub(x[rows], mean_, out=dx[rows])
        torch.addcmul(k3, xc, k2, out=xc).addcmul_(dy[rows], k1)
    return dx


def _backward_blocked(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None):
    """``_backward_reference`` as one pass over (x, dy) for the sums and one that writes dx."""
    sum_dy, sum_dy_xc = _grad_sums_blocked(dy, x, mean)
    dweight = sum_dy_xc * invstd
    dx = _grad_input_blocked(dy, x, mean, invstd, weight, sum_dy, dweight, _values_per_channel(x))
    return dx, dweight, sum_dy


# The blocked algorithm once more, as a compiler should see it (``MyBN(compiled=True)``): whole
# tensors and no scratch buffers, and torch.compile fuses each pass into one loop over memory. The
# sums go through ``_channel_sums`` here too, for another reason: a plain sum over dim 0 compiles to
# a loop that walks down the columns of x, a cache line per row (measured 1.5 to 3 times slower),
# while summing groups of rows first gives each thread whole rows.


_PIVOT_ROWS = 16


def _forward_fused(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """``_forward_blocked`` for torch.compile: one pass over x for the statistics around a pivot, one
    that writes y. Returns ``(y, mean, var, invstd)``, all (C,) but y.

    The pivot is the mean of the first rows only. Sums around a pivot lose about
    log2(1 + (pivot - mean)**2 / var) bits of the variance: nothing for a shuffled batch, a few bits
    if the first rows are outliers. That is the price of the pass that ``_centre`` spends on an exact
    mean first.
    """
    dims, m = _reduce_dims(x), _values_per_channel(x)
    pivot = x[:_PIVOT_ROWS].mean(dims)  # (C,)
    d = x - _per_channel(pivot, x)  # (N, C, *), never stored: recomputed inside each fused loop
    d_mean = _channel_sums(d) / m
    var = _channel_sums(d * d) / m - d_mean * d_mean
    invstd = torch.rsqrt(var + eps)
    scale, shift = _scale_shift(invstd, d_mean, weight, bias)
    return torch.addcmul(_per_channel(shift, x), d, _per_channel(scale, x)), pivot + d_mean, var, invstd


def _backward_fused(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None):
    """``_backward_blocked`` for torch.compile: one pass over (x, dy) for the sums, one that writes dx."""
    xc = x - _per_channel(mean, x)
    sum_dy, dweight = _channel_sums(dy), _channel_sums(dy * xc) * invstd
    k1, k2, k3 = _grad_coefficients(x, invstd, weight, sum_dy, dweight, _values_per_channel(x))
    return torch.addcmul(torch.addcmul(k3, xc, k2), dy, k1), dweight, sum_dy


# ----------------------------------------------------------------------------------------------
# Across processes: the batch is split over the processes of a torch.distributed group, and each
# process normalises its share with the statistics of the whole batch.


def _all_stats(x: Tensor, group) -> tuple[Tensor, Tensor, Tensor, int]:
    """``(pivot, d_mean, var, total)`` of the batch spread over ``group``, for this process's ``x``.

    Each process sends its count, pivot, mean offset and biased variance (one all_gather of 3C + 1
    numbers), and every process combines them the same way, exactly: by counts, not as an average
    of averages (the parallel algorithm of Chan, Golub & LeVeque). ``d_mean`` is the global mean
    minus this process's pivot, so that ``x - pivot`` stays the exactly centred quantity.
    """
    c, n = x.size(1), _values_per_channel(x)
    if n > 0:
        pivot, d_mean, var = _stats_blocked(x)
    else:  # nothing here; the other processes still need this one's (empty) share
        pivot = d_mean = var = x.new_zeros(c)
    local = torch.cat([pivot, d_mean, var, pivot.new_tensor([n])]).double()
    shares = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shares, local, group=group)
    table = torch.stack(shares)  # (processes, 3C + 1), in float64
    counts = table[:, -1:]  # (processes, 1)
    total = int(counts.sum().item())
    if total <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got {total} over all processes")
    offsets = table[:, :c] - pivot.double() + table[:, c : 2 * c]  # each share's mean minus this pivot
    offsets = torch.where(counts > 0, offsets, 0.0)  # (processes, C)
    delta = (counts * offsets).sum(0) / total  # (C,)
    m2 = (counts * torch.where(counts > 0, table[:, 2 * c : 3 * c], 0.0)).sum(0)  # within shares
    m2 = m2 + (counts * (offsets - delta) ** 2).sum(0)  # between shares
    return pivot, delta.to(x.dtype), (m2 / total).to(x.dtype), total


def _all_reduce_sum(tensors: list[Tensor], group) -> list[Tensor]:
    """Sum each tensor over the processes of ``group`` (one all_reduce for all of them)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    return list(flat.split([t.numel() for t in tensors]))


_COMPILED: dict = {}


def _path(x: Tensor, compiled: bool, group) -> str:
    """Which version of the math runs for ``x`` (the parity tests hold each of them to PyTorch):

    - ``"sync"``: statistics and gradient sums combined over the processes of ``group``;
    - ``"compiled"``: ``_forward_fused``/``_backward_fused`` through ``torch.compile``;
    - ``"plain"``: the plain formula, for small inputs, where every operation costs its call
      overhead: fewest operations, and the residuals x - mean are kept for the backward;
    - ``"blocked"``: large inputs on the CPU: fewest passes over memory, fewest large allocations;
    - ``"lean"``: large inputs elsewhere (CUDA): the plain formula, the residuals recomputed.
    """
    if group is not None:
        return "sync"
    if compiled:
        return "compiled"
    if x.numel() <= _SMALL_ELEMS:
        return "plain"
    return "blocked" if x.device.type == "cpu" else "lean"


def _compiled(fn):
    """``torch.compile(fn)``, built once; it needs a C++ compiler the first time it runs.

    After a second input shape it compiles once more for any shape (dynamic shapes), so a model
    with many batch-norm layers does not run into the recompilation limit.
    """
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm with a hand-written backward.

    Forward returns ``(y, mean, unbiased_var)``: the batch statistics that update the running
    estimates, returned without gradient. With a process ``group`` the batch is the one spread over
    the group's processes: statistics in the forward and per-channel sums in the backward are
    combined across them, so every gradient is that of batch norm over the whole batch.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, compiled: bool, group):
        xa = _as(x, _acc_dtype(x.dtype))  # a float32 copy of half/bfloat16 input
        path = _path(xa, compiled, group)
        m = _values_per_channel(xa)
        xc = scale = None  # the residuals x - mean and gamma*invstd, kept by the plain path only
        if path == "sync":
            pivot, d_mean, var, m = _all_stats(xa, group)
            y, invstd = _normalize_blocked(xa, pivot, d_mean, var, weight, bias, eps)
            mean = pivot + d_mean
        elif path == "plain":
            y, xc, mean, var, invstd, scale = _forward_reference(xa, weight, bias, eps)
        elif path == "blocked":
            y, mean, var, invstd = _forward_blocked(xa, weight, bias, eps)
        elif path == "compiled":  # requires_grad is part of what a compiled function is specialised on
            y, mean, var, invstd = _compiled(_forward_fused)(xa.detach(), weight, bias, eps)
        else:
            y, mean, var, invstd = _forward_lean(xa, weight, bias, eps)
        ctx.eps, ctx.path, ctx.group, ctx.m = eps, path, group, m
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, weight, mean, invstd, xc, scale)
        ctx.set_materialize_grads(False)
        unbiased = torch.add(var, var, alpha=1 / (m - 1))  # var * M/(M - 1); M > 1 was checked before
        ctx.mark_non_differentiable(mean, unbiased)
        return _as(y, x.dtype), mean, unbiased

    @staticmethod
    def backward(ctx, dy: Tensor | None, _dmean, _dvar):
        x, weight, mean, invstd, xc, scale = ctx.saved_tensors
        if dy is None:
            return None, None, None, None, None, None
        dya = _as(dy, _acc_dtype(x.dtype))
        if ctx.path == "plain" and not torch.is_grad_enabled():  # the residuals were kept: x is not needed
            dx, dweight, dbias = _grad_reference(dya, xc, invstd, scale, ctx.m)
        else:
            dx, dweight, dbias = _BatchNormTrain._backward_from_x(ctx, dya, _as(x, dya.dtype), weight, mean, invstd)
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad[:3]
        return (
            _as(dx, x.dtype) if need_dx else None,
            _as(dweight, weight.dtype) if weight is not None and need_dweight else None,
            _as(dbias, ctx.bias_dtype) if ctx.bias_dtype is not None and need_dbias else None,
            None,
            None,
            None,
        )

    @staticmethod
    def _backward_from_x(ctx, dya: Tensor, xa: Tensor, weight, mean: Tensor, invstd: Tensor):
        """``(dx, dgamma, dbeta)`` for every path that recomputes from x (in the accumulation dtype)."""
        if torch.is_grad_enabled():
            if ctx.path == "sync":
                raise RuntimeError("MyBN(sync=True) does not support double backward (create_graph=True)")
            # create_graph=True: the statistics must be functions of x in the graph, so that
            # differentiating this backward again (double backward) sees how they depend on x.
            _, xc, _, _, invstd, scale = _forward_reference(xa, weight, None, ctx.eps)
            return _grad_reference(dya, xc, invstd, scale, ctx.m)
        if ctx.path == "blocked":
            return _backward_blocked(dya, xa, mean, invstd, weight)
        if ctx.path == "sync":
            sum_dy, sum_dy_xc = _grad_sums_blocked(dya, xa, mean)
            all_dy, all_dy_xc = _all_reduce_sum([sum_dy, sum_dy_xc], ctx.group)
            dx = _grad_input_blocked(dya, xa, mean, invstd, weight, all_dy, all_dy_xc * invstd, ctx.m)
            return dx, sum_dy_xc * invstd, sum_dy  # this process's share of dgamma, dbeta; DDP combines them
        backward = _compiled(_backward_fused) if ctx.path == "compiled" else _backward_reference
        return backward(dya, xa, mean, invstd, weight)


def batch_norm_train(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    *,
    compiled: bool = False,
    process_group=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Normalise ``x`` (N, C, *) with the statistics of its batch.

    Returns ``(y, mean, var)``: the output, and the (C,) batch mean and *unbiased* variance (what
    the running estimates track), in float32 for half/bfloat16 input, detached from the graph.
    ``compiled=True`` runs the math through ``torch.compile`` (a C++ compiler is needed on the
    CPU). With a ``process_group`` the batch is the one spread over that group's processes.
    """
    return _BatchNormTrain.apply(x, weight, bias, eps, compiled, process_group)


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
        compiled: run the training math through ``torch.compile``, fused into one pass over memory
            for the statistics and one for the output (opt-in: for large inputs; it needs a C++
            compiler on the CPU). Default: ``False``
        sync: in training, when ``torch.distributed`` is initialised and ``process_group`` has more
            than one process, normalise with the statistics of the batch spread over all of them
            (as ``nn.SyncBatchNorm`` does, but on the CPU too). Eval mode never communicates.
            Default: ``False``
        process_group: the group to synchronise over; ``None`` is the default (world) group.

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
        compiled: bool = False,
        sync: bool = False,
        process_group=None,
    ) -> None:
        super().__init__()
        if compiled and sync:
            raise ValueError("MyBN: compiled=True and sync=True cannot be combined")
        factory = {"device": device, "dtype": dtype}
        self.compiled = compiled
        self.sync = sync
        self.process_group = process_group
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

    def _check_input(self, x: Tensor, per_channel: tuple, use_batch_stats: bool, synced: bool = False) -> None:
        """Raise the exception ``nn.BatchNorm1d`` raises for the same bad input, with a clearer message.

        ``per_channel``: the parameters and buffers this call uses, None where absent. ``synced``:
        ``x`` is one process's share of a batch; its count is checked over all shares.
        """
        self._check_input_dim(x)
        if use_batch_stats:
            if not synced and _values_per_channel(x) == 1:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
                )
            if self.eps <= 0:
                raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        elif self.eps < 0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        channels, dtype = x.shape[1], x.dtype
        for t in per_channel:
            if t is not None and t.numel() != channels:
                raise RuntimeError(
                    f"{type(self).__name__}({self.num_features}) expected input with "
                    f"{self.num_features} channels in dim 1, got input of shape {tuple(x.shape)}"
                )
        if not x.is_floating_point():
            raise NotImplementedError(f"{type(self).__name__} needs floating-point input, got {dtype}")
        for t in per_channel:
            if t is not None and t.dtype != dtype and not (dtype in _LOW_PRECISION and t.dtype == torch.float32):
                raise RuntimeError(
                    f"{type(self).__name__}: input dtype {dtype} does not match parameter/buffer dtype {t.dtype}"
                )

    def forward(self, x: Tensor) -> Tensor:
        # Each module attribute is read once: on a small input, every lookup shows in the time.
        weight, bias, running_mean, running_var = self.weight, self.bias, self.running_mean, self.running_var
        training = self.training
        # Batch statistics in training, and in eval when there are no running estimates to use.
        use_batch_stats = training or (running_mean is None and running_var is None)
        update_running = training and self.track_running_stats
        group = self._sync_group()
        per_channel = (weight, bias, running_mean, running_var) if update_running or not training else (weight, bias)
        self._check_input(x, per_channel, use_batch_stats, synced=group is not None)

        factor = 0.0
        tracked = self.num_batches_tracked
        if update_running and tracked is not None:
            tracked.add_(1)
            factor = 1.0 / float(tracked) if self.momentum is None else self.momentum  # None: cumulative average

        if x.numel() == 0 and group is None:
            # Nothing to normalise; keep weight and bias in the graph so they get zero gradients.
            return _affine(x.clone(), weight, bias)

        if not use_batch_stats:
            return self._eval_forward(x)

        y, mean, var = batch_norm_train(x, weight, bias, self.eps, compiled=self.compiled, process_group=group)
        if update_running and running_mean is not None:
            # mean and var come out of the graph (non-differentiable): no graph grows through the buffers
            self._update_running(running_mean, mean, factor)
            self._update_running(running_var, var, factor)  # the unbiased variance
        return y

    def _sync_group(self):
        """The process group to take statistics over, or None: only in training, with ``sync``, and
        when ``torch.distributed`` runs more than one process in the group."""
        if not (self.sync and self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    @staticmethod
    def _update_running(running: Tensor, batch: Tensor, factor: float) -> None:
        """running <- (1 - factor) * running + factor * batch, accumulated in ``batch``'s dtype."""
        if running.dtype == batch.dtype:
            running.lerp_(batch, factor)  # the same update as one operation
        else:
            running.copy_(running.to(batch.dtype).lerp_(batch, factor))

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


def convert_to_mybn(module: nn.Module, *, sync: bool = False, process_group=None) -> nn.Module:
    """Replace every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` in ``module`` by ``MyBN``/``MyBN2d``.

    The new layers take over the old ones' parameters and buffers (the same tensors, so an
    optimiser built on the model keeps working), hence their device, dtype and values, and their
    train/eval mode. Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, it converts in place and
    returns the module, which is a new object only when ``module`` itself is a batch-norm layer.
    With ``sync=True`` every MyBN layer of the result, new or already there, synchronises its
    statistics over ``process_group`` (see ``MyBN``).
    """
    if isinstance(module, MyBN):
        if sync:
            module.sync, module.process_group = True, process_group
        return module
    new_type = {nn.BatchNorm1d: MyBN, nn.BatchNorm2d: MyBN2d}.get(type(module))
    if new_type is not None:
        new = new_type(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device="meta",  # placeholders only; the real tensors are moved over below
            bias=module.bias is not None,
            sync=sync,
            process_group=process_group,
        )
        for name, param in module.named_parameters(recurse=False):
            setattr(new, name, param)
        for name, buf in module.named_buffers(recurse=False):
            setattr(new, name, buf)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_mybn(child, sync=sync, process_group=process_group))
    return module
