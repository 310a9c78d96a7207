"""``MyBN``, the module: PyTorch's parameters, buffers, running estimates, eval mode and input checks
around ``batch_norm_train`` (``my_bn/function.py``), and its variants for other input ranks."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from my_bn import fast, functional, settings
from my_bn.function import LOW_PRECISION
from my_bn.hints import Device, ProcessGroup
from my_bn.reference import values_per_channel


class MyBN(_BatchNorm):
    """Batch normalisation over a 2D or 3D input, written by hand; a drop-in for ``nn.BatchNorm1d``.

    It is a ``torch.nn.modules.batchnorm._BatchNorm``, as PyTorch's batch-norm layers are, so that the
    tools that find batch norm by that type find it (``nn.SyncBatchNorm.convert_sync_batchnorm``,
    ``torch.func.replace_all_batch_norm_modules_``, Lightning's freezing). Its parameters and buffers are
    made, reset and loaded from a state dict by PyTorch's own code (``_NormBase``); everything a
    forward computes is here.

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
                 track_running_stats: bool = True, device: Device = None, dtype: torch.dtype | None = None, *,
                 bias: bool = True, sync: bool = False, process_group: ProcessGroup | None = None,
                 backend: str | None = None) -> None:
        backend = settings.BACKEND if backend is None else backend
        if backend not in settings.BACKENDS:
            raise ValueError(f"MyBN: backend must be one of {', '.join(map(repr, settings.BACKENDS))}, got {backend!r}")
        # _BatchNorm's parameters and buffers, made as PyTorch makes them (not through its subclasses'
        # constructors, which order their arguments differently)
        _NormBase.__init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.backend = backend
        self.sync, self.process_group = sync, process_group  # sync: a property, which a variant may refuse

    supports_sync = True  # whether sync=True is implemented (Batch Renorm and ghost batch norm: not)

    @property
    def sync(self) -> bool:
        """Whether training normalises with the statistics of the batch spread over ``process_group``."""
        state = self.__dict__
        return state.get("_sync", state.get("sync", False))  # "sync": a layer pickled before it was a property

    @sync.setter
    def sync(self, value: bool) -> None:
        if value and not self.supports_sync:
            raise ValueError(f"{type(self).__name__} does not support sync=True: its statistics are per process")
        self.__dict__["_sync"] = bool(value)

    def extra_repr(self) -> str:
        backend = "" if self.backend == "python" else f", backend={self.backend!r}"
        return super().extra_repr() + backend

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, torch.fx.Proxy):  # torch.fx.symbolic_trace: one call_module node, as nn's layers are
            return x.tracer.create_proxy("call_module", x.tracer.path_of_module(self), (x,), {})
        return self._forward(x, self.weight, self.bias)

    def _forward(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """The forward with ``weight`` and ``bias`` as gamma and beta in training (a variant may pass its
        own, as ``my_bn.variants.MyBatchRenorm`` does); eval mode uses the layer's own."""
        # Each module attribute is read once: on a small input, every lookup shows in the time.
        running_mean, running_var, training = self.running_mean, self.running_var, self.training
        # Batch statistics in training, and in eval when there are no running estimates to use.
        use_batch_stats = training or (running_mean is None and running_var is None)
        update_running = training and self.track_running_stats
        group = fast.sync_group(self.process_group) if self.sync and training else None
        per_channel = (weight, bias, running_mean, running_var) if update_running or not training else (weight, bias)
        self._check_input(x, per_channel, use_batch_stats, synced=group is not None)
        if update_running:
            self._count_step(x, weight, bias, running_mean, running_var)
        running = (running_mean, running_var) if update_running or not training else (None, None)
        return functional.batch_norm(x, *running, weight, bias, training, self.momentum, self.eps,
                                     num_batches_tracked=self.num_batches_tracked, backend=self.backend,
                                     process_group=group)

    def _count_step(self, x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                    running_var: Tensor | None) -> None:
        """A training step that updates the running estimates: refuse what cannot be updated in place, before
        anything moves, then count the step in ``num_batches_tracked``."""
        strided = (running_mean is not None and not running_mean.is_contiguous()) or (
            running_var is not None and not running_var.is_contiguous())
        if strided:
            self._check_writable()
        if torch._C._functorch.maybe_current_level() is not None:  # inside a torch.func transform
            self._check_buffers_transformed(x, weight, bias)
        tracked = self.num_batches_tracked
        if tracked is not None:
            tracked.add_(1)

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

    def _check_writable(self) -> None:
        """The running estimates are updated in place: refuse, before any of them changes, one whose
        elements share memory (an expanded tensor, stride 0), which no in-place update can write."""
        for key in ("running_mean", "running_var"):
            t = getattr(self, key)
            if t is not None and any(step == 0 and size > 1 for step, size in zip(t.stride(), t.shape, strict=True)):
                raise RuntimeError(f"{type(self).__name__}: {key} has elements that share memory (stride 0, an "
                                   f"expanded tensor) and cannot be updated in place: give it its own, e.g. "
                                   f"layer.{key} = layer.{key}.clone()")

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
                           "torch.jit.trace instead")


class MyBN2d(MyBN, nn.BatchNorm2d):
    """:class:`MyBN` over a 4D input (N, C, H, W), statistics over N, H and W; a drop-in for ``nn.BatchNorm2d``,
    and an ``nn.BatchNorm2d`` to ``isinstance`` (MyBN's methods come first), as tools that freeze or fuse 2D batch
    norm look for it."""

    _input_dims = (4,)


class MyBN3d(MyBN, nn.BatchNorm3d):
    """:class:`MyBN` over a 5D input (N, C, D, H, W); a drop-in for ``nn.BatchNorm3d``, and one to ``isinstance``."""

    _input_dims = (5,)


class MySyncBN(MyBN, nn.SyncBatchNorm):
    """:class:`MyBN` with ``sync=True`` over any input (N, C, *); a drop-in for ``nn.SyncBatchNorm`` (and one to
    ``isinstance``),
    same constructor, that runs on the CPU too. ``convert_to_mybn`` makes one of each
    ``nn.SyncBatchNorm``, whose input rank cannot be known before its first call."""

    _input_dims = None  # any rank from 2 up

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: ProcessGroup | None = None,
                 device: Device = None, dtype: torch.dtype | None = None, *, bias: bool = True,
                 backend: str | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         sync=True, process_group=process_group, backend=backend)
