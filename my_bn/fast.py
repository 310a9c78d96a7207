"""Faster versions of the batch-norm math in ``my_bn/reference.py``, and when ``MyBN`` uses each.

``my_bn.batchnorm_forward`` / ``batchnorm_backward`` are the reference: the formulas as a textbook
writes them. Every version here computes the same quantities by another route; the parity tests
hold each of them to the reference and to PyTorch's own kernel (``tests/my_bn/test_layer.py`` runs every
test through the blocked kernels too, ``tests/my_bn/test_distributed.py`` the cross-process one).
``path_for`` picks one per call:

- ``"reference"``: inputs of up to ``SMALL_ELEMS`` elements (the experiment's (64, 10) batches).
  There every operator call costs a few microseconds whatever its size, so the fewest calls win,
  and that is the reference itself. Also every input of a model run through ``torch.compile`` or
  ``torch.export``: the compiler plans the memory itself, and ``torch.export`` cannot trace the
  blocked kernels' writes into buffers.
- ``"blocked"``: larger inputs on the CPU, eager. A large tensor costs more to allocate (page
  faults) and to stream through memory than to compute with, so the batch is gone through a block
  of rows at a time: one pass over x for the statistics and one that writes y, in a scratch buffer
  that stays in cache. Against the reference run on the same inputs, on this repository's 2-core
  machine: forward+backward 2.6 to 5 times faster at 8192×1024, 65536×512 and 256×128×256, the
  forward alone 3.5 to 10.5 times (``results/bench_reference.json``, from ``python bench.py
  --reference --no-compile --no-train-loop --shapes 64x10 8192x1024 65536x512 256x128x256``).
- ``"lean"``: larger inputs on a GPU. The reference formulas, but the residuals x - mean are not
  kept from the forward to the backward (which recomputes them): one tensor of x's size less. Row
  blocks would only multiply the kernel launches there.
- ``"sync"``: ``MyBN(sync=True)`` in a ``torch.distributed`` group of several processes. Not a
  faster route but a larger batch: each process holds a share, and statistics and gradient sums
  are combined across the group, so that every process normalises with the whole batch's.

``my_bn.REFERENCE_ONLY`` (or ``MYBN_REFERENCE_ONLY=1`` in the environment) sends every call of a
single process through the reference instead, to step through it in a debugger.

``MyBN(backend="cpp")`` runs none of these in training on the CPU: ``my_bn/cpp.cpp`` computes the
same quantities as hand-written C++ loops (see ``my_bn/cpp.py``). The blocked kernels stay for a
machine without a compiler and for ``"sync"``, which is built on them. A ``"compiled"`` path, the
blocked algorithm through ``torch.compile``, was retired with the C++ backend: it needed a compiler
too, and the C++ backend was as fast or faster in training at every shape of ``bench.py``.

Here tensors are already in the accumulation dtype (float32 for half/bfloat16 input), and the
per-channel results ``mean``, ``var`` and ``invstd`` are (C,).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from my_bn.reference import channels, stat_dims, values_per_channel

BLOCK_ELEMS = 1 << 20  # 4 MiB of float32 per block: out of L2, but in L3
SMALL_ELEMS = 1 << 14  # up to here (64 KiB of float32) the reference, with fewer operations, is faster
ROW_GROUPS = 16  # channel_sums sums this many groups of rows first; blocks hold a multiple of it


def path_for(x: Tensor, group) -> str:
    """Which version of the math runs for ``x`` (see the module docstring)."""
    if group is not None:
        return "sync"
    if x.numel() <= SMALL_ELEMS or torch.compiler.is_compiling():
        return "reference"
    return "blocked" if x.device.type == "cpu" else "lean"


def forward(path: str, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group):
    """The training forward of ``path`` ("blocked" or "sync"): ``(y, mean, var, invstd, m)``, with the
    biased ``var`` and M, the number of values each channel's statistics were taken over."""
    if path == "sync":
        pivot, d_mean, var, m = all_stats(x, group)
        y, invstd = normalize_blocked(x, pivot, d_mean, var, weight, bias, eps)
        return y, pivot + d_mean, var, invstd, m
    y, mean, var, invstd = forward_blocked(x, weight, bias, eps)
    return y, mean, var, invstd, values_per_channel(x)


def backward(path: str, dy: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, invstd: Tensor, m: int, group):
    """``(dx, dgamma, dbeta)`` of ``path`` from x and its (C,) statistics."""
    if path == "sync":
        sum_dy, sum_dy_xc = grad_sums_blocked(dy, x, mean)
        all_dy, all_dy_xc = all_reduce_sum([sum_dy, sum_dy_xc], group)
        dx = grad_input_blocked(dy, x, mean, invstd, weight, all_dy, all_dy_xc * invstd, m)
        return dx, sum_dy_xc * invstd, sum_dy  # this process's share of dgamma, dbeta; DDP combines them
    return backward_blocked(dy, x, mean, invstd, weight)


def scale_of(invstd: Tensor, weight: Tensor | None) -> Tensor:
    """The per-channel factor of the output, gamma / sqrt(var + eps), (C,)."""
    return invstd if weight is None else invstd * weight


# ---------------------------------------------------------------------------------------------- blocked


def row_blocks(x: Tensor) -> list[slice]:
    """Slices of dim 0 holding about ``BLOCK_ELEMS`` elements each, in whole groups of rows."""
    rows = max(1, BLOCK_ELEMS // max(1, math.prod(x.shape[1:])))
    rows = max(ROW_GROUPS, rows - rows % ROW_GROUPS)
    return [slice(i, i + rows) for i in range(0, x.size(0), rows)]


def channel_sums(block: Tensor) -> Tensor:
    """Per-channel sums of an (n, C, *) block that was just written.

    With several threads, an elementwise operation splits a block by rows, while a plain sum over
    dim 0 splits it by channels: each thread would then read rows that another core has just
    written (measured 3 to 12 times slower with two threads). So the sum is taken over the trailing
    dimensions first (within each row), then over groups of rows, each thread on rows it wrote.
    """
    if block.dim() > 2:
        block = block.sum(list(range(2, block.dim())))  # (n, C)
    n = block.size(0)
    if n > ROW_GROUPS and n % ROW_GROUPS == 0:
        block = block.view(ROW_GROUPS, n // ROW_GROUPS, block.size(1)).sum(1)  # (groups, C)
    return block.sum(0)


def stats_blocked(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel ``(pivot, d_mean, var)`` of x in one pass: mean = pivot + d_mean, var biased.

    The statistics are the reference's with the first block's mean as the shift: sums of
    ``d = x - pivot`` and ``d**2``, corrected by ``mean(d)``. The pivot is within sqrt(M/B)
    standard deviations of the mean (B of the M values per channel are in the first block), so the
    correction costs at most a factor M/B in the precision of the variance: nothing for one block.
    """
    dims = stat_dims(x)[0]
    m = values_per_channel(x)
    blocks = row_blocks(x)
    # (C,), in float64 (no overflow; a constant channel's exact value); finite: an inf or NaN in x reaches the sums
    pivot = x[blocks[0]].mean(dims, dtype=torch.float64).to(x.dtype).nan_to_num(0.0, 0.0, 0.0)
    pivot_ = channels(pivot, x)
    scratch = torch.empty_like(x[blocks[0]])
    s1 = s2 = 0
    for rows in blocks:
        d = torch.sub(x[rows], pivot_, out=scratch[: x[rows].size(0)])
        s1 = s1 + channel_sums(d)
        s2 = s2 + channel_sums(d.square_())
    d_mean = s1 / m  # (C,)
    var = s2 / m - d_mean * d_mean
    if not bool(torch.isfinite(s2).all()):  # an inf or NaN in x, or sums that overflowed (values near ±3e38)
        pivot, d_mean, var = stats_float64(x, pivot, d_mean, var)
    return pivot, d_mean, var


def stats_float64(x: Tensor, pivot: Tensor, d_mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``stats_blocked``'s result taken again in float64 for each channel where x is finite: float64 sums
    cannot overflow. A variance beyond float32's range stays inf, as PyTorch's (the output is then β)."""
    var64, mean64 = torch.var_mean(x.to(torch.float64), stat_dims(x)[0], correction=0)
    finite = torch.isfinite(mean64)  # channels where x holds no inf or NaN
    pivot = torch.where(finite, mean64.to(x.dtype), pivot)
    d_mean = torch.where(finite, (mean64 - pivot.double()).to(x.dtype), d_mean)
    return pivot, d_mean, torch.where(finite, var64.to(x.dtype), var)


def scale_shift(invstd: Tensor, d_mean: Tensor, weight, bias) -> tuple[Tensor, Tensor]:
    """Per channel, y = (x - pivot - d_mean) * invstd * gamma + beta  ==  (x - pivot) * scale + shift."""
    scale = scale_of(invstd, weight)
    shift = -d_mean * scale if bias is None else torch.addcmul(bias, d_mean, scale, value=-1)
    return scale, shift


def normalize_blocked(x: Tensor, pivot: Tensor, d_mean: Tensor, var: Tensor, weight, bias, eps: float):
    """y = (x - pivot - d_mean) / sqrt(var + eps) * gamma + beta in one pass; returns ``(y, invstd)``."""
    invstd = torch.rsqrt(var + eps)
    scale, shift = scale_shift(invstd, d_mean, weight, bias)
    pivot_, scale_, shift_ = (channels(v, x) for v in (pivot, scale, shift))
    y = torch.empty_like(x)
    for rows in row_blocks(x):  # y = (x - pivot) * scale + shift
        torch.addcmul(shift_, torch.sub(x[rows], pivot_, out=y[rows]), scale_, out=y[rows])
    return y, invstd


def forward_blocked(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """The reference forward as one pass over x for the statistics and one that writes y."""
    pivot, d_mean, var = stats_blocked(x)
    y, invstd = normalize_blocked(x, pivot, d_mean, var, weight, bias, eps)
    return y, pivot + d_mean, var, invstd


def grad_sums_blocked(dy: Tensor, x: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` in one pass over (x, dy)."""
    blocks = row_blocks(x)
    if not blocks:  # an empty share of a batch split over processes
        return x.new_zeros(x.size(1)), x.new_zeros(x.size(1))
    mean_ = channels(mean, x)
    scratch = torch.empty_like(x[blocks[0]])
    sum_dy = sum_dy_xc = 0
    for rows in blocks:
        sum_dy = sum_dy + channel_sums(dy[rows])
        xc = torch.sub(x[rows], mean_, out=scratch[: x[rows].size(0)])
        sum_dy_xc = sum_dy_xc + channel_sums(xc.mul_(dy[rows]))
    return sum_dy, sum_dy_xc


def grad_coefficients(x: Tensor, invstd: Tensor, weight: Tensor | None, sum_dy: Tensor, dweight: Tensor, m: int):
    """The reference's dx rearranged as ``dy * k1 + (x - mean) * k2 + k3`` with per-channel
    k1 = gamma*invstd, k2 = -k1*invstd*dgamma/M and k3 = -k1*sum(dy)/M, shaped for x."""
    scale = scale_of(invstd, weight)
    k = scale / -m
    return channels(scale, x), channels(k * invstd * dweight, x), channels(k * sum_dy, x)


def grad_input_blocked(dy, x, mean, invstd, weight, sum_dy: Tensor, dweight: Tensor, m: int) -> Tensor:
    """dx from the per-channel sums over all M values, in one pass."""
    k1, k2, k3 = grad_coefficients(x, invstd, weight, sum_dy, dweight, m)
    mean_ = channels(mean, x)
    dx = torch.empty_like(x)
    for rows in row_blocks(x):
        xc = torch.sub(x[rows], mean_, out=dx[rows])
        torch.addcmul(k3, xc, k2, out=xc).addcmul_(dy[rows], k1)
    return dx


def backward_blocked(dy: Tensor, x: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None):
    """The reference backward as one pass over (x, dy) for the sums and one that writes dx."""
    sum_dy, sum_dy_xc = grad_sums_blocked(dy, x, mean)
    dweight = sum_dy_xc * invstd
    dx = grad_input_blocked(dy, x, mean, invstd, weight, sum_dy, dweight, values_per_channel(x))
    return dx, dweight, sum_dy


# ---------------------------------------------------------------------------------------------- sync
# Across processes: the batch is split over the processes of a torch.distributed group, and each
# process normalises its share with the statistics of the whole batch.


def all_stats(x: Tensor, group) -> tuple[Tensor, Tensor, Tensor, int]:
    """``(pivot, d_mean, var, total)`` of the batch spread over ``group``, for this process's ``x``.

    Each process sends its count, pivot, mean offset and biased variance (one all_gather of 3C + 1
    numbers), and every process combines them the same way, exactly: by counts, not as an average
    of averages (the parallel algorithm of Chan, Golub & LeVeque). ``d_mean`` is the global mean
    minus this process's pivot, so that ``x - pivot`` stays the exactly centred quantity.
    """
    c, n = x.size(1), values_per_channel(x)
    if n > 0:
        pivot, d_mean, var = stats_blocked(x)
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


def sync_group(process_group):
    """The group whose processes share the batch (None is the default, world group), or None when
    ``torch.distributed`` runs no group of several processes: then there is nothing to combine."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def all_reduce_sum(tensors: list[Tensor], group) -> list[Tensor]:
    """Sum each tensor over the processes of ``group`` (one all_reduce for all of them)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    return list(flat.split([t.numel() for t in tensors]))
