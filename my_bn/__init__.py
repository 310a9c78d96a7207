"""MyBN: batch normalisation written by hand, an exact drop-in for ``torch.nn.BatchNorm1d``.

Read it top to bottom: ``batchnorm_forward`` and ``batchnorm_backward``, batch norm in training
mode as a textbook writes it, and ``batchnorm_jvp``, its forward-mode derivative;
``BatchNormFunction``, the ``torch.autograd.Function`` that runs them (under ``torch.func`` too);
then the module ``MyBN``, with PyTorch's parameters, buffers, running estimates, eval mode and
input checks, and its variants for other input ranks. Nothing here calls PyTorch's batch-norm
kernels; ``my_bn/convert.py`` turns the batch-norm layers of a model into these.

Faster versions of the same math, for large inputs and several processes, live in ``my_bn/fast.py``,
and ``BatchNormFunction`` hands a call to one of them where it applies; ``MyBN(backend="cpp")`` runs
training on the CPU through hand-written C++ loops instead (``my_bn/cpp.py``). Set
``my_bn.REFERENCE_ONLY = True`` (or ``MYBN_REFERENCE_ONLY=1`` in the environment) to run every call
of a single process through the two reference functions alone, to step through them in a debugger.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch._functorch.utils import unwrap_dead_wrappers

from my_bn import cpp, fast

__all__ = ["MyBN", "MyBN2d", "MyBN3d", "MySyncBN", "batch_norm_train", "convert_to_mybn", "__version__"]
__all__ += ["batchnorm_forward", "batchnorm_backward", "batchnorm_jvp"]  # the reference functions

__version__ = "1.0.0"  # the package's; results files record it too (CITATION.cff: the same)

REFERENCE_ONLY = os.environ.get("MYBN_REFERENCE_ONLY", "0") not in ("", "0")
BACKENDS = ("python", "cpp")
BACKEND = os.environ.get("MYBN_BACKEND", "python")  # what MyBN(backend=None) runs; see MyBN's docstring
_LOW_PRECISION = (torch.float16, torch.bfloat16)  # accumulated in float32, as PyTorch does


class Cache(NamedTuple):
    """What the backward needs from the forward. Per-channel tensors are shaped to broadcast against
    x: (C,) for (N, C) input, (1, C, 1, ...) for (N, C, L, ...)."""

    xc: Tensor  # x - mean                          (N, C, *)
    invstd: Tensor  # 1 / sqrt(var + eps)           (C,)
    scale: Tensor  # gamma / sqrt(var + eps)        (C,)


def batchnorm_forward(x: Tensor, gamma: Tensor | None, beta: Tensor | None, eps: float):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel, with the statistics of the batch.

    Returns ``(y, mean, var, cache)``: the output, the batch mean and biased variance per channel
    (shaped as in ``Cache``), and what ``batchnorm_backward`` needs.

    x is (N, C) or (N, C, L, ...); each channel's mean and biased variance are taken over its M = N·L
    values. gamma and beta are (C,), or None for 1 and 0. The variance is centred before it is
    squared: E[x²] - E[x]² loses every digit when |mean| >> std. The first mean, Σx/M, is itself
    rounded; the mean of the residuals x - Σx/M (zero in exact arithmetic) corrects it, and the
    variance with it (the corrected two-pass algorithm; Chan, Golub & LeVeque, 1983).
    """
    dims, keep = _stat_dims(x)
    m = x.numel() // x.size(1)  # M values per channel
    total = x.sum(dims, keepdim=keep)  # Σx, per channel
    xc = torch.sub(x, total, alpha=1 / m)  # x - Σx/M                        (N, C, *)
    var, err = torch.var_mean(xc, dims, correction=0, keepdim=keep)  # var; err = mean(x - Σx/M)
    err = err.nan_to_num(0.0, 0.0, 0.0)  # an inf in x makes err NaN: no correction, mean = Σx/M (inf, as PyTorch's)
    xc = xc - err  # x - mean                                                (N, C, *)
    mean = torch.add(err, total, alpha=1 / m)  # Σx/M + err
    invstd = torch.rsqrt(var + eps)  # 1 / sqrt(var + eps)
    scale = invstd if gamma is None else invstd * _channels(gamma, x)  # gamma / sqrt(var + eps)
    y = xc * scale if beta is None else torch.addcmul(_channels(beta, x), xc, scale)  # x̂·gamma + beta
    return y, mean, var, Cache(xc, invstd, scale)


def batchnorm_backward(dy: Tensor, cache: Cache) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dgamma, dbeta)`` from dy = ∂L/∂y (the shape of x), with x̂ = (x - mean) / sqrt(var + eps):

    dbeta = Σdy,   dgamma = Σ dy·x̂,   dx = gamma / (M·sqrt(var + eps)) · (M·dy - Σdy - x̂·Σ dy·x̂)

    Every sum runs over a channel's M values. dx has three terms because each x moves y through its
    own x̂, and through the mean and the variance that every x̂ of its channel shares.
    """
    xc, invstd, scale = cache
    dims, keep = _stat_dims(dy)
    m = dy.numel() // dy.size(1)
    dbeta = dy.sum(dims, keepdim=keep)  # Σdy, per channel
    dgamma = (dy * xc).sum(dims, keepdim=keep) * invstd  # Σ dy·x̂, with x̂ = xc·invstd
    # dx = scale · (dy - (Σdy + x̂·Σ dy·x̂) / M)
    dx = torch.add(dy, torch.addcmul(dbeta, xc, invstd * dgamma), alpha=-1 / m) * scale  # (N, C, *)
    return dx, _flat(dgamma), _flat(dbeta)


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
        dims, keep = _stat_dims(tx)
        ty = (tx - tx.mean(dims, keepdim=keep) - xhat * (xhat * tx).mean(dims, keepdim=keep)) * scale
    if tgamma is not None:
        ty = torch.addcmul(ty, xhat, _channels(tgamma, xc))
    return ty if tbeta is None else ty + _channels(tbeta, xc)


def differentiable_backward(dy: Tensor, x: Tensor, weight: Tensor | None, eps: float):
    """``batchnorm_backward`` for double backward (``create_graph=True``): ``(dx, dgamma, dbeta)`` in the
    accumulation dtype, with the statistics recomputed from x, so that autograd records them as
    functions of x too."""
    acc = _accumulation_dtype(x)
    x, weight = _as(x, acc), _as(weight, acc)
    return batchnorm_backward(_as(dy, acc), batchnorm_forward(x, weight, None, eps)[3])


# Shapes. Each of these helpers saves an operator call for (N, C) input, where a call costs more
# than the arithmetic: a (C,) vector already broadcasts against (N, C).


def _stat_dims(x: Tensor) -> tuple[int | list[int], bool]:
    """The dimensions each channel's statistics run over (all but dim 1), and whether to keep them."""
    return (0, False) if x.dim() == 2 else ([0, *range(2, x.dim())], True)


def _channels(v: Tensor, x: Tensor) -> Tensor:
    """A (C,) vector shaped to broadcast against x: (1, C, 1, ...), or as it is for (N, C)."""
    return v if x.dim() == 2 else v.view(1, -1, *([1] * (x.dim() - 2)))


def _flat(v: Tensor) -> Tensor:
    """A per-channel tensor as (C,)."""
    return v if v.dim() == 1 else v.view(-1)


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` in ``dtype``; the same tensor, with no call into PyTorch, when it already is."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half and bfloat16 input, as PyTorch accumulates them; else x's own dtype."""
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def _path(x: Tensor, group) -> str:
    """Which version of the math runs: see ``my_bn.fast.path_for``; the reference alone with ``REFERENCE_ONLY``."""
    return "reference" if REFERENCE_ONLY and group is None else fast.path_for(x, group)


def _cache(x: Tensor, weight: Tensor | None, mean: Tensor, xc, invstd: Tensor, scale) -> Cache:
    """The ``Cache`` from what the forward kept, recomputing x - mean and gamma·invstd where it did not."""
    xc = x - _channels(mean, x) if xc is None else xc
    invstd = _channels(invstd, x)  # shaped by the reference; (C,) from my_bn.fast
    if scale is None:
        scale = invstd if weight is None else invstd * _channels(weight, x)
    return Cache(xc, invstd, scale)


def _transformed(t: Tensor) -> bool:
    """Whether ``t`` is a torch.func transform's wrapper (of vmap, grad, jvp): the blocked kernels,
    which write into buffers, do not run on those."""
    return not torch.compiler.is_compiling() and torch._C._functorch.is_functorch_wrapped_tensor(t)


def _per_member(v: Tensor | None, dim: int | None, members: int) -> Tensor | None:
    """A (C,) parameter for B·C channels under vmap: its own for each member where it is batched."""
    if v is None:
        return None
    return v.repeat(members) if dim is None else v.movedim(dim, 0).reshape(-1)


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with the hand-written derivatives; half and bfloat16 computed in float32.

    ``apply(x, weight, bias, eps, group)`` returns ``(y, mean, unbiased_var, xc, invstd,
    scale, total)``: the output, the statistics for the running estimates, and what the derivatives
    need (``Cache``'s three tensors, None where not kept, and with ``group`` the number of values
    per channel over all processes), all but y without gradient. Large inputs
    and a process ``group`` go to ``my_bn/fast.py``.

    It is written in the form ``torch.func`` can transform: ``forward`` takes no ``ctx`` and returns
    what the backward needs as outputs, ``setup_context`` saves it; ``backward`` is the reverse-mode
    derivative (``batchnorm_backward``), ``jvp`` the forward-mode one (``batchnorm_jvp``), and
    ``vmap`` says how to run a batch of batch norms at once.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group):
        acc = _accumulation_dtype(x)
        xa, wa, ba = _as(x, acc), _as(weight, acc), _as(bias, acc)  # "a": in the accumulation dtype
        path = _path(x, group)
        if path in ("reference", "lean"):
            y, mean, var, (xc, invstd, scale) = batchnorm_forward(xa, wa, ba, eps)
            mean, var, m = _flat(mean), _flat(var), fast.values_per_channel(x)
            xc = xc if path == "reference" else None  # lean: x - mean is recomputed, not kept
        else:
            y, mean, var, invstd, m = fast.forward(path, xa, wa, ba, eps, group)  # sync: M over all processes
            xc = scale = None
        unbiased = torch.add(var, var, alpha=1 / (m - 1))  # var * M/(M - 1); M > 1 was checked before
        total = torch.tensor(m) if path == "sync" else None  # setup_context cannot count the other processes' values
        return _as(y, x.dtype), mean, unbiased, xc, invstd, None if scale is invstd else scale, total

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _bias, eps, group = inputs
        _y, mean, unbiased, *kept, total = output
        ctx.mark_non_differentiable(mean, unbiased, *(t for t in (*kept, total) if t is not None))
        m = fast.values_per_channel(x) if total is None else int(total)
        ctx.save_for_backward(x, weight, mean, *kept)
        ctx.save_for_forward(x, weight, mean, *kept)
        ctx.set_materialize_grads(False)
        ctx.eps, ctx.group, ctx.path, ctx.m = eps, group, _path(x, group), m
        ctx.dtypes = (None if weight is None else weight.dtype, None if _bias is None else _bias.dtype)

    @staticmethod
    def backward(ctx, dy: Tensor | None, *_no_gradient):
        if dy is None:
            return None, None, None, None, None
        x, weight, mean, *kept = ctx.saved_tensors
        acc = _accumulation_dtype(x)
        # cast here, so that double backward reaches weight
        xa, dya, weight = _as(x, acc), _as(dy, acc), _as(weight, acc)
        if torch.is_grad_enabled():  # create_graph=True
            if ctx.path == "sync":
                raise RuntimeError("MyBN(sync=True) does not support double backward (create_graph=True)")
            dx, dweight, dbias = differentiable_backward(dya, xa, weight, ctx.eps)
        elif ctx.path in ("reference", "lean") or _transformed(dya):  # torch.func: whole-tensor operations only
            dx, dweight, dbias = batchnorm_backward(dya, _cache(xa, weight, mean, *kept))
        else:
            dx, dweight, dbias = fast.backward(ctx.path, dya, xa, weight, mean, kept[1], ctx.m, ctx.group)
        (need_dx, need_dweight, need_dbias, *_), (weight_dtype, bias_dtype) = ctx.needs_input_grad, ctx.dtypes
        dx = _as(dx, x.dtype) if need_dx else None
        dweight = _as(dweight, weight_dtype) if weight_dtype is not None and need_dweight else None
        dbias = _as(dbias, bias_dtype) if bias_dtype is not None and need_dbias else None
        return dx, dweight, dbias, None, None

    @staticmethod
    def jvp(ctx, tx: Tensor | None, tweight: Tensor | None, tbias: Tensor | None, *_not_tensors):
        if ctx.path == "sync":
            raise RuntimeError("MyBN(sync=True) does not support forward-mode AD")
        x, weight, mean, *kept = ctx.saved_tensors
        acc = _accumulation_dtype(x)
        xa = _as(x, acc)
        ty = batchnorm_jvp(_as(tx, acc), _as(tweight, acc), _as(tbias, acc), _cache(xa, _as(weight, acc), mean, *kept))
        return _as(ty, x.dtype), None, None, None, None, None, None  # y only: the rest has no derivative

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, eps, group):
        """B batch norms of C channels each are one batch norm of B·C channels: (B, N, C, *) -> (N, B·C, *)."""
        b, (x_dim, weight_dim, bias_dim, *_) = info.batch_size, in_dims
        x = x.expand(b, *x.shape) if x_dim is None else x.movedim(x_dim, 0)  # (B, N, C, *)
        n, c = x.shape[1:3]
        x = x.transpose(0, 1).reshape(n, b * c, *x.shape[3:])
        weight, bias = _per_member(weight, weight_dim, b), _per_member(bias, bias_dim, b)
        outputs = BatchNormFunction.apply(x, weight, bias, eps, group)
        # back to one batch norm per member: (B·C,) -> (B, C) and (N, B·C, *) -> (N, B, C, *)
        *tensors, total = outputs
        unfolded = [t if t is None else t.view(b, c) if t.dim() == 1 else t.view(t.size(0), b, c, *t.shape[2:])
                    for t in tensors]  # fmt: skip
        out_dims = [None if t is None else 0 if t.dim() == 2 else 1 for t in unfolded]
        return (*unfolded, total), (*out_dims, None)


def batch_norm_train(x: Tensor, weight, bias, eps: float, *, process_group=None):
    """``BatchNormFunction`` applied: ``(y, mean, unbiased_var)`` of ``x`` (N, C, *), the statistics (C,),
    in float32 for half/bfloat16 input, and detached. ``process_group``: see ``MyBN``."""
    args = (x, weight, bias, eps, process_group)
    if torch.compiler.is_compiling():
        return _BatchNormFunctionToCompile.apply(*args)[:3]
    if torch._C._are_functorch_transforms_active():
        return BatchNormFunction.apply(*args)[:3]
    return _apply_eager(*unwrap_dead_wrappers(args))[:3]


class _BatchNormFunctionToCompile(BatchNormFunction):
    """``BatchNormFunction`` less its ``jvp``, for ``torch.compile`` (and ``torch.export``): Dynamo
    cannot trace an autograd.Function that defines one, and would break the graph at every layer."""

    jvp = staticmethod(torch.autograd.Function.jvp)


# BatchNormFunction.apply less one step. Once setup_context is defined, Function.apply binds the
# arguments to forward's signature with inspect.signature on every call: 15 µs, a tenth of the
# layer's time at 64×10. batch_norm_train always passes all five, so eager calls skip it;
# torch.func takes the full route, which it needs.
_apply_eager = super(torch.autograd.Function, BatchNormFunction).apply


class MyBN(nn.Module):
    """Batch normalisation over a 2D or 3D input, written by hand; a drop-in for ``nn.BatchNorm1d``.

    It exists so that every step of batch norm can be read in one file and checked number for
    number against PyTorch's kernel, while behaving exactly like ``nn.BatchNorm1d``: same
    constructor, parameters, buffers, state dict, train/eval semantics and errors.

    In training, per channel, over the M = N·L values of the batch (``batchnorm_forward``)::

        mean = Σx / M,   var = Σ(x - mean)² / M,   y = (x - mean) / sqrt(var + eps) · gamma + beta

    Two variances are in play: the output is normalised with the *biased* ``var`` (divide by M),
    while ``running_var`` tracks the *unbiased* one, var · M / (M - 1). The running estimates follow
    ``running ← (1 - momentum) · running + momentum · batch``: momentum weights the *new* batch,
    unlike an optimiser's momentum. ``momentum=None`` makes the factor 1 / num_batches_tracked, a
    cumulative average; ``momentum=0`` freezes the estimates. In eval mode the running estimates
    replace the batch statistics, unless they are not tracked: then batch statistics are used
    there too. The backward is hand-written (``batchnorm_backward``).

    Args:
        num_features: number of features or channels C of the input.
        eps: added to the variance before the square root. Default: 1e-5
        momentum: weight of the new batch in the running estimates; ``None`` for a cumulative
            average. Default: 0.1
        affine: learn a per-channel scale ``weight`` (gamma) and shift ``bias`` (beta). Default: True
        track_running_stats: keep ``running_mean``/``running_var``/``num_batches_tracked`` buffers
            and use them in eval mode; if False the buffers are None and batch statistics are used
            in both modes. Default: True
        device, dtype: where and in which dtype parameters and buffers are created.
        bias: with ``affine``, also learn the shift ``bias``. Default: True
        backend: ``"python"``, the code of this file and ``my_bn/fast.py``; or ``"cpp"``, the same
            math as hand-written C++ loops (``my_bn/cpp.cpp``), for training on the CPU. It is built
            on first use and needs a C++ compiler; without one, one line says so and the Python
            backend runs. Where the C++ backend does not apply (eval mode, other devices, ``sync``
            across processes, ``torch.func``, ``torch.compile``, tracing), the Python backend runs
            too, and double backward runs the reference (see ``my_bn/cpp.py``). None:
            ``my_bn.BACKEND``, which is ``"python"`` unless ``MYBN_BACKEND`` says otherwise.
            Default: None
        sync: in training, with several ``torch.distributed`` processes in ``process_group``,
            normalise with the statistics of the batch spread over all of them, as
            ``nn.SyncBatchNorm`` does, but on the CPU too. Eval never communicates. Default: False
        process_group: the group to synchronise over; None is the default (world) group.

    Shape:
        - Input: (N, C) or (N, C, L); half and bfloat16 are accumulated in float32 (parameters
          may be float32 or the input's dtype)
        - Output: same shape and dtype as the input
    """

    _version = 2  # the state-dict version of nn.BatchNorm1d: num_batches_tracked exists
    _input_dims = (2, 3)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True,
                 sync: bool = False, process_group=None, backend: str | None = None) -> None:  # fmt: skip
        super().__init__()
        backend = BACKEND if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"MyBN: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.sync, self.process_group = sync, process_group
        self.weight = nn.Parameter(torch.empty(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.empty(num_features, **factory)) if affine and bias else None
        # Buffers, not plain attributes: state_dict(), load_state_dict() and .to() carry them.
        track = track_running_stats
        self.register_buffer("running_mean", torch.zeros(num_features, **factory) if track else None)
        self.register_buffer("running_var", torch.ones(num_features, **factory) if track else None)
        tracked = torch.tensor(0, dtype=torch.long, device=device) if track else None
        self.register_buffer("num_batches_tracked", tracked)
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
        backend = "" if self.backend == "python" else f", backend={self.backend!r}"
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}{backend}")  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace: one call_module node, as nn's layers are
            return x.tracer.create_proxy("call_module", x.tracer.path_of_module(self), (x,), {})
        # Each module attribute is read once: on a small input, every lookup shows in the time.
        weight, bias, running_mean, running_var = self.weight, self.bias, self.running_mean, self.running_var
        training = self.training
        # Batch statistics in training, and in eval when there are no running estimates to use.
        use_batch_stats = training or (running_mean is None and running_var is None)
        update_running = training and self.track_running_stats
        group = fast.sync_group(self.process_group) if self.sync and training else None
        per_channel = (weight, bias, running_mean, running_var) if update_running or not training else (weight, bias)
        self._check_input(x, per_channel, use_batch_stats, synced=group is not None)

        tracked = self.num_batches_tracked
        if update_running and torch._C._functorch.maybe_current_level() is not None:  # inside a torch.func transform
            self._check_buffers_transformed(x, weight, bias)
        if update_running and tracked is not None:
            tracked.add_(1)

        if x.numel() == 0 and group is None:  # nothing to normalise; weight and bias get zero gradients
            x = x.clone() if weight is None else x * _channels(weight, x)
            return x if bias is None else x + _channels(bias, x)
        if not use_batch_stats:
            return self._eval_forward(x)

        running = (running_mean, running_var) if update_running else (None, None)
        use_cpp = self.backend == "cpp" and group is None and not REFERENCE_ONLY
        if use_cpp and cpp.handles(x, weight, bias, *running):
            factor = self.momentum
            if factor is None:
                factor = 1.0 / tracked.item() if tracked is not None else 0.0
            return cpp.train(x, weight, bias, *running, factor, self.eps)  # one call
        y, mean, var = batch_norm_train(x, weight, bias, self.eps, process_group=group)
        if update_running and running_mean is not None:
            # mean and var come out of the graph (non-differentiable): no graph grows through the buffers
            factor = self.momentum
            if factor is None:  # a cumulative average; a tensor, so that torch.compile compiles it once
                factor = tracked.to(mean.dtype).reciprocal() if tracked is not None else 0.0
            self._update_running(running_mean, mean, factor)
            self._update_running(running_var, var, factor)  # the unbiased variance
        return y

    def _eval_forward(self, x: Tensor) -> Tensor:
        """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta."""
        acc = _accumulation_dtype(x)
        xa = x.to(acc)
        scale = torch.rsqrt(self.running_var.to(acc) + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight.to(acc)
        xc = xa - _channels(self.running_mean.to(acc), xa)  # (N, C, *)
        if self.bias is None:
            return (xc * _channels(scale, xa)).to(x.dtype)
        return torch.addcmul(_channels(self.bias.to(acc), xa), xc, _channels(scale, xa)).to(x.dtype)

    @staticmethod
    def _update_running(running: Tensor, batch: Tensor, factor: float | Tensor) -> None:
        """running <- (1 - factor) * running + factor * batch, accumulated in ``batch``'s dtype."""
        if running.dtype == batch.dtype and not _transformed(batch):
            running.lerp_(batch, factor)  # the same update as one operation
        else:  # out of place, which vmap also has a batching rule for
            running.copy_(torch.lerp(running.to(batch.dtype), batch, factor))

    def _check_input(self, x: Tensor, per_channel: tuple, use_batch_stats: bool, synced: bool = False) -> None:
        """Raise the exception ``nn.BatchNorm1d`` raises for the same bad input, with a clearer message.

        ``per_channel``: the parameters and buffers this call uses, None where absent. ``synced``:
        ``x`` is one process's share of a batch; its count is checked over all shares.
        """
        if x.dim() < 2 if self._input_dims is None else x.dim() not in self._input_dims:
            expected = "at least 2D" if self._input_dims is None else " or ".join(f"{d}D" for d in self._input_dims)
            raise ValueError(f"expected {expected} input (got {x.dim()}D input)")
        if use_batch_stats:
            if not synced and fast.values_per_channel(x) == 1:
                shape = tuple(x.shape)
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")
            if self.eps <= 0:
                raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        elif self.eps < 0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {self.eps}")
        channels, dtype, name = x.shape[1], x.dtype, type(self).__name__
        for t in per_channel:
            if t is not None and t.numel() != channels:
                n, shape = self.num_features, tuple(x.shape)
                raise RuntimeError(f"{name}({n}) expected input with {n} channels in dim 1, got input of shape {shape}")
        if not x.is_floating_point():
            raise NotImplementedError(f"{name} needs floating-point input, got {dtype}")
        for t in per_channel:
            if t is not None and t.dtype != dtype and not (dtype in _LOW_PRECISION and t.dtype == torch.float32):
                raise RuntimeError(f"{name}: input dtype {dtype} does not match parameter/buffer dtype {t.dtype}")

    def _check_buffers_transformed(self, x: Tensor, weight, bias) -> None:
        """Under a torch.func transform, the running estimates can be updated in place only where the
        transform sees them as it sees the input: batched by vmap, or passed in to grad, jvp, etc."""
        level = torch._C._functorch.maybe_get_level  # -1 outside every transform
        inputs = max(level(t) for t in (x, weight, bias) if t is not None)
        buffers = [t for t in (self.running_mean, self.running_var, self.num_batches_tracked) if t is not None]
        if any(level(t) < inputs for t in buffers):
            name = type(self).__name__
            raise RuntimeError(
                f"{name} in training mode updates running_mean, running_var and num_batches_tracked in place, and "
                "under this torch.func transform they are held from outside (not batched by vmap, not passed in to "
                "grad/jvp): use track_running_stats=False, eval mode, or pass the buffers in, e.g. "
                "functional_call(model, (params, buffers), x) with buffers from torch.func.stack_module_state"
            )

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first: one clear error instead of TorchScript's, the same every time
        why = "TorchScript cannot compile its autograd.Function"
        raise RuntimeError(f"{type(self).__name__} is not scriptable ({why}): use torch.compile, torch.export or "
                           "torch.jit.trace instead")  # fmt: skip

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        # Checkpoints older than version 2 have no num_batches_tracked: keep the layer's own count (0
        # where it has none to keep, on the meta device), as PyTorch does.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            tracked = self.num_batches_tracked
            keep = tracked is not None and tracked.device.type != "meta"
            state_dict[key] = tracked if keep else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)


class MyBN2d(MyBN):
    """:class:`MyBN` over a 4D input (N, C, H, W), statistics over N, H and W; a drop-in for ``nn.BatchNorm2d``."""

    _input_dims = (4,)


class MyBN3d(MyBN):
    """:class:`MyBN` over a 5D input (N, C, D, H, W); a drop-in for ``nn.BatchNorm3d``."""

    _input_dims = (5,)


class MySyncBN(MyBN):
    """:class:`MyBN` with ``sync=True`` over any input (N, C, *); a drop-in for ``nn.SyncBatchNorm``,
    same constructor, that runs on the CPU too. ``convert_to_mybn`` makes one of each
    ``nn.SyncBatchNorm``, whose input rank cannot be known before its first call."""

    _input_dims = None  # any rank from 2 up

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None, *,
                 bias: bool = True, backend: str | None = None) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         sync=True, process_group=process_group, backend=backend)  # fmt: skip


from my_bn.convert import convert_to_mybn  # noqa: E402  - it needs the classes above
