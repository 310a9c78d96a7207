"""``MyBN``, the module: PyTorch's parameters, buffers, running estimates, eval mode and input checks
around ``batch_norm_train`` (``my_bn/function.py``), and its variants for other input ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from my_bn import cpp, fast, settings
from my_bn.function import LOW_PRECISION, accumulation_dtype, batch_norm_train, transformed
from my_bn.reference import channels, values_per_channel


class MyBN(nn.Module):
    """Batch normalisation over a 2D or 3D input, written by hand; a drop-in for ``nn.BatchNorm1d``.

    It exists so that every step of batch norm can be read (``my_bn/reference.py``) and checked
    number for number against PyTorch's kernel, while behaving exactly like ``nn.BatchNorm1d``: same
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
        backend: ``"python"``, the Python code of this package (``reference.py``, ``function.py``,
            ``fast.py``); or ``"cpp"``, the same math as hand-written C++ loops (``my_bn/cpp.cpp``),
            for training on the CPU. It is built on first use and needs a C++ compiler; without one,
            one line says so and the Python backend runs. Where the C++ backend does not apply (eval
            mode, other devices, ``sync`` across processes, ``torch.func``, ``torch.compile``,
            tracing), the Python backend runs too, and double backward runs the reference (see
            ``my_bn/cpp.py``). None:
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
        backend = settings.BACKEND if backend is None else backend
        if backend not in settings.BACKENDS:
            raise ValueError(f"MyBN: backend must be one of {', '.join(map(repr, settings.BACKENDS))}, got {backend!r}")
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
        return self._forward(x, self.weight, self.bias)

    def _forward(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """The forward with ``weight`` and ``bias`` as gamma and beta in training (a variant may pass its
        own, as ``my_bn.variants.MyBatchRenorm`` does); eval mode uses the layer's own."""
        # Each module attribute is read once: on a small input, every lookup shows in the time.
        running_mean, running_var = self.running_mean, self.running_var
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
            x = x.clone() if weight is None else x * channels(weight, x)
            return x if bias is None else x + channels(bias, x)
        if not use_batch_stats:
            return self._eval_forward(x)

        running = (running_mean, running_var) if update_running else (None, None)
        use_cpp = self.backend == "cpp" and group is None and not settings.REFERENCE_ONLY
        in_cpp = use_cpp and cpp.handles(x, weight, bias, *running)
        # float64 for C++, which takes a double (1/n exactly, as nn.BatchNorm1d's); else the statistics' dtype
        factor = self._momentum_factor(torch.float64 if in_cpp else accumulation_dtype(x)) if update_running else 0.0
        if in_cpp:
            return cpp.train(x, weight, bias, *running, float(factor), self.eps)  # one call
        y, mean, var = batch_norm_train(x, weight, bias, self.eps, process_group=group)
        if running_mean is not None and update_running:
            # mean and var come out of the graph (non-differentiable): no graph grows through the buffers
            self._update_running(running_mean, mean, factor)
            self._update_running(running_var, var, factor)  # the unbiased variance
        return y

    def _momentum_factor(self, dtype: torch.dtype) -> float | Tensor:
        """The weight of this batch in the running estimates: ``momentum``, or 1/num_batches_tracked for a
        cumulative average (``momentum=None``), as a tensor of ``dtype``, so that torch.compile compiles it once."""
        tracked = self.num_batches_tracked
        if self.momentum is not None:
            return self.momentum
        return 0.0 if tracked is None else tracked.to(dtype).reciprocal()

    def _eval_forward(self, x: Tensor) -> Tensor:
        """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta."""
        acc = accumulation_dtype(x)
        xa = x.to(acc)
        scale = torch.rsqrt(self.running_var.to(acc) + self.eps)  # (C,)
        if self.weight is not None:
            scale = scale * self.weight.to(acc)
        xc = xa - channels(self.running_mean.to(acc), xa)  # (N, C, *)
        if self.bias is None:
            return (xc * channels(scale, xa)).to(x.dtype)
        return torch.addcmul(channels(self.bias.to(acc), xa), xc, channels(scale, xa)).to(x.dtype)

    @staticmethod
    def _update_running(running: Tensor, batch: Tensor, factor: float | Tensor) -> None:
        """running <- (1 - factor) * running + factor * batch, accumulated in ``batch``'s dtype."""
        if running.dtype == batch.dtype and not transformed(batch):
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
            if not synced and values_per_channel(x) == 1:
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
            if t is not None and t.dtype != dtype and not (dtype in LOW_PRECISION and t.dtype == torch.float32):
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
