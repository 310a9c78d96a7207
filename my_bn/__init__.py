"""MyBN: batch normalisation written by hand, an exact drop-in for PyTorch's ``nn.BatchNorm1d/2d/3d``
and ``nn.SyncBatchNorm``.

Read it in this order:

1. ``my_bn/reference.py``: batch norm in training mode as the math, one line per line of the formulas:
   ``batchnorm_forward``, ``batchnorm_backward`` and ``batchnorm_jvp`` (the forward-mode derivative).
2. ``my_bn/layer.py``: the module ``MyBN`` (and ``MyBN2d``, ``MyBN3d``, ``MySyncBN``), with PyTorch's
   parameters, buffers and input checks; ``my_bn/functional.py``: ``batch_norm``, what its forward
   computes (eval mode, the running estimates), and which code computes it.
3. ``my_bn/function.py``: ``BatchNormFunction``, the ``torch.autograd.Function`` that runs the
   reference (under ``torch.func``, ``torch.compile`` and ``torch.export`` too), and hands large
   inputs and batches spread over processes to ``my_bn/fast.py``, faster versions of the same math.
4. ``my_bn/cpp.py`` and ``my_bn/cpp.cpp``: the opt-in C++ backend, ``MyBN(backend="cpp")``.
5. ``my_bn/convert.py``: ``convert_to_mybn``, which swaps a model's batch-norm layers for these.
6. ``my_bn/variants.py``: Batch Renormalization (``MyBatchRenorm``, ``MyBatchRenorm2d``) and ghost batch
   norm (``MyGhostBN``, ``MyGhostBN2d``), as ``MyBN`` subclasses.
7. ``my_bn/fusion.py``: ``FUSER_METHODS``, for PyTorch's quantization fusion (``fuse_modules``).

Every layer here is a ``torch.nn.modules.batchnorm._BatchNorm``, where PyTorch's tools and the
ecosystem's look for batch norm (``MyBN2d`` is also an ``nn.BatchNorm2d``, ``MyBN3d`` an
``nn.BatchNorm3d``, ``MySyncBN`` an ``nn.SyncBatchNorm``).

Nothing here calls PyTorch's batch-norm kernels. ``my_bn.REFERENCE_ONLY = True`` (or
``MYBN_REFERENCE_ONLY=1`` in the environment) runs every call of a single process through the
reference functions alone, to step through them in a debugger; ``my_bn.BACKEND`` is what
``MyBN(backend=None)`` runs (``my_bn/settings.py``).
"""

from __future__ import annotations

import sys
import types

from my_bn import settings
from my_bn.convert import convert_to_mybn
from my_bn.function import batch_norm_train
from my_bn.fusion import FUSER_METHODS, pytorch_counterpart
from my_bn.layer import MyBN, MyBN2d, MyBN3d, MySyncBN
from my_bn.reference import batchnorm_backward, batchnorm_forward, batchnorm_jvp
from my_bn.variants import MyBatchRenorm, MyBatchRenorm2d, MyGhostBN, MyGhostBN2d

__all__ = ["MyBN", "MyBN2d", "MyBN3d", "MySyncBN", "batch_norm_train", "convert_to_mybn", "__version__"]
__all__ += ["MyBatchRenorm", "MyBatchRenorm2d", "MyGhostBN", "MyGhostBN2d"]  # the variants
__all__ += ["batchnorm_forward", "batchnorm_backward", "batchnorm_jvp"]  # the reference functions
__all__ += ["FUSER_METHODS", "pytorch_counterpart"]  # PyTorch's quantization fusion for these layers

__version__ = "1.1.0"  # the package's; results files record it too (CITATION.cff: the same)


def _setting(name: str) -> property:
    return property(lambda _: getattr(settings, name), lambda _, value: setattr(settings, name, value))


class _Package(types.ModuleType):
    """``my_bn.REFERENCE_ONLY`` and ``my_bn.BACKEND`` read and write ``my_bn.settings``, where the layer reads them."""

    REFERENCE_ONLY = _setting("REFERENCE_ONLY")
    BACKEND = _setting("BACKEND")


sys.modules[__name__].__class__ = _Package
