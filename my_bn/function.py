"""``BatchNormFunction``: the reference functions of ``my_bn/reference.py`` as a ``torch.autograd.Function``,
and the machinery that lets one layer run under autograd, double backward, ``torch.func``, ``torch.compile``
and ``torch.export``, in half precision, and across processes.

``batch_norm_train`` is the one entry point ``MyBN`` calls. It hands a large input, or a batch spread
over processes, to the faster versions of the same math in ``my_bn/fast.py`` (``fast.path_for`` says
which runs); ``my_bn.REFERENCE_ONLY`` sends every call of a single process through the reference.
Half and bfloat16 are computed in float32, as PyTorch accumulates them.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers

from my_bn import fast, reference, settings
from my_bn.hints import ProcessGroup
from my_bn.reference import channels, flat, values_per_channel

LOW_PRECISION = (torch.float16, torch.bfloat16)  # accumulated in float32, as PyTorch does


def differentiable_backward(dy: Tensor, x: Tensor, weight: Tensor | None, eps: float):
    """``batchnorm_backward`` for double backward (``create_graph=True``): ``(dx, dgamma, dbeta)`` in the
    accumulation dtype, with the statistics recomputed from x, so that autograd records them as
    functions of x too."""
    acc = accumulation_dtype(x)
    x, weight = as_dtype(x, acc), as_dtype(weight, acc)
    return reference.batchnorm_backward(as_dtype(dy, acc), reference.batchnorm_forward(x, weight, None, eps)[3])


def as_dtype(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``t`` in ``dtype``; the same tensor, with no call into PyTorch, when it already is."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def accumulation_dtype(x: Tensor) -> torch.dtype:
    """float32 for half and bfloat16 input, as PyTorch accumulates them; else x's own dtype."""
    return torch.float32 if x.dtype in LOW_PRECISION else x.dtype


def _path(x: Tensor, group) -> str:
    """Which version of the math runs: see ``my_bn.fast.path_for``; the reference alone with ``REFERENCE_ONLY``."""
    return "reference" if settings.REFERENCE_ONLY and group is None else fast.path_for(x, group)


def _cache(x: Tensor, weight: Tensor | None, mean: Tensor, xc, invstd: Tensor, scale) -> reference.Cache:
    """The ``Cache`` from what the forward kept, recomputing x - mean and gamma·invstd where it did not."""
    xc = x - channels(mean, x) if xc is None else xc
    invstd = channels(invstd, x)  # shaped by the reference; (C,) from my_bn.fast
    if scale is None:
        scale = invstd if weight is None else invstd * channels(weight, x)
    return reference.Cache(xc, invstd, scale)


def transformed(t: Tensor) -> bool:
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
        acc = accumulation_dtype(x)
        xa, wa, ba = as_dtype(x, acc), as_dtype(weight, acc), as_dtype(bias, acc)  # "a": in the accumulation dtype
        path = _path(x, group)
        if path in ("reference", "lean"):
            y, mean, var, (xc, invstd, scale) = reference.batchnorm_forward(xa, wa, ba, eps)
            mean, var, m = flat(mean), flat(var), values_per_channel(x)
            xc = xc if path == "reference" else None  # lean: x - mean is recomputed, not kept
        else:
            y, mean, var, invstd, m = fast.forward(path, xa, wa, ba, eps, group)  # sync: M over all processes
            xc = scale = None
        unbiased = torch.add(var, var, alpha=1 / (m - 1))  # var * M/(M - 1); M > 1 was checked before
        total = torch.tensor(m) if path == "sync" else None  # setup_context cannot count the other processes' values
        return as_dtype(y, x.dtype), mean, unbiased, xc, invstd, None if scale is invstd else scale, total

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _bias, eps, group = inputs
        _y, mean, unbiased, *kept, total = output
        ctx.mark_non_differentiable(mean, unbiased, *(t for t in (*kept, total) if t is not None))
        m = values_per_channel(x) if total is None else int(total)
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
        acc = accumulation_dtype(x)
        # cast here, so that double backward reaches weight
        xa, dya, weight = as_dtype(x, acc), as_dtype(dy, acc), as_dtype(weight, acc)
        if torch.is_grad_enabled():  # create_graph=True
            if ctx.path == "sync":
                raise RuntimeError("MyBN(sync=True) does not support double backward (create_graph=True)")
            dx, dweight, dbias = differentiable_backward(dya, xa, weight, ctx.eps)
        elif ctx.path in ("reference", "lean") or transformed(dya):  # torch.func: whole-tensor operations only
            dx, dweight, dbias = reference.batchnorm_backward(dya, _cache(xa, weight, mean, *kept))
        else:
            dx, dweight, dbias = fast.backward(ctx.path, dya, xa, weight, mean, kept[1], ctx.m, ctx.group)
        (need_dx, need_dweight, need_dbias, *_), (weight_dtype, bias_dtype) = ctx.needs_input_grad, ctx.dtypes
        dx = as_dtype(dx, x.dtype) if need_dx else None
        dweight = as_dtype(dweight, weight_dtype) if weight_dtype is not None and need_dweight else None
        dbias = as_dtype(dbias, bias_dtype) if bias_dtype is not None and need_dbias else None
        return dx, dweight, dbias, None, None

    @staticmethod
    def jvp(ctx, tx: Tensor | None, tweight: Tensor | None, tbias: Tensor | None, *_not_tensors):
        if ctx.path == "sync":
            raise RuntimeError("MyBN(sync=True) does not support forward-mode AD")
        x, weight, mean, *kept = ctx.saved_tensors
        acc = accumulation_dtype(x)
        xa = as_dtype(x, acc)
        cache = _cache(xa, as_dtype(weight, acc), mean, *kept)
        ty = reference.batchnorm_jvp(as_dtype(tx, acc), as_dtype(tweight, acc), as_dtype(tbias, acc), cache)
        return as_dtype(ty, x.dtype), None, None, None, None, None, None  # y only: the rest has no derivative

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
                    for t in tensors]
        out_dims = [None if t is None else 0 if t.dim() == 2 else 1 for t in unfolded]
        return (*unfolded, total), (*out_dims, None)


def batch_norm_train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, *,
                     process_group: ProcessGroup | None = None) -> tuple[Tensor, Tensor, Tensor]:
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
