"""``FUSER_METHODS``: PyTorch's quantization fusion (``torch.ao.quantization.fuse_modules``) for ``MyBN``.

``fuse_modules`` finds what it can fuse by exact type (``(nn.Conv2d, nn.BatchNorm2d)``, ...), so a
subclass is not fused by default; its documented extension point is ``additional_fuser_method_mapping``::

    from torch.ao.quantization import fuse_modules
    fused = fuse_modules(model.eval(), [["conv", "bn", "relu"]],
                         fuse_custom_config_dict={"additional_fuser_method_mapping": my_bn.FUSER_METHODS})

Each entry is PyTorch's own fuser method for the same pattern, run on the ``nn.BatchNorm`` layer that
holds the ``MyBN`` layer's tensors (``pytorch_counterpart``): in eval mode the folded weights are
exactly those of ``torch.nn.utils.fuse_conv_bn_eval``. Batch Renorm and ghost batch norm are batch
norm in eval mode and fuse there; in training mode (``fuse_modules_qat``, or a batch norm followed by a
ReLU), where the fused module would train as ``nn.BatchNorm``, they are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.ao.quantization.fuser_method_mappings import _DEFAULT_OP_LIST_TO_FUSER_METHOD

from my_bn.convert import holding_tensors_of
from my_bn.layer import MyBN, MyBN2d, MyBN3d
from my_bn.variants import MyBatchRenorm, MyBatchRenorm2d, MyGhostBN, MyGhostBN2d

__all__ = ["FUSER_METHODS", "pytorch_counterpart"]

OURS = {nn.BatchNorm1d: (MyBN, MyBatchRenorm, MyGhostBN), nn.BatchNorm2d: (MyBN2d, MyBatchRenorm2d, MyGhostBN2d),
        nn.BatchNorm3d: (MyBN3d,)}


def pytorch_counterpart(layer: MyBN) -> nn.modules.batchnorm._BatchNorm:
    """The ``nn.BatchNorm1d/2d/3d`` that holds ``layer``'s parameters and buffers (the same tensors) and its
    train/eval mode: what ``layer`` computes in eval mode."""
    # the most specific first: MyBN2d is a MyBN too
    base = next((t for t in reversed(OURS) if isinstance(layer, OURS[t])), None)
    if base is None:
        raise ValueError(f"{type(layer).__name__} has no nn.BatchNorm1d/2d/3d counterpart")
    return holding_tensors_of(layer, base)


def _with_pytorch_layers(method: Callable) -> Callable:
    """PyTorch's fuser ``method`` run on the ``nn.BatchNorm`` counterparts of the ``MyBN`` layers it is given."""

    def fuse(is_qat: bool, *modules: nn.Module):
        for m in modules:  # a variant is batch norm in eval mode only
            if isinstance(m, MyBN) and type(m) not in (MyBN, MyBN2d, MyBN3d) and (is_qat or m.training):
                raise ValueError(f"{type(m).__name__} can be fused in eval mode only (fuse_modules on model.eval()): "
                                 "fused, it would train as nn.BatchNorm")
        return method(is_qat, *(pytorch_counterpart(m) if isinstance(m, MyBN) else m for m in modules))

    return fuse


def _fuser_methods() -> dict[tuple, Callable]:
    """PyTorch's default fusions with each ``nn.BatchNorm`` type replaced by each of ours."""
    methods = {}
    for pattern, method in _DEFAULT_OP_LIST_TO_FUSER_METHOD.items():
        for torch_type, ours in OURS.items():
            if torch_type in pattern:
                for our_type in ours:
                    methods[tuple(our_type if t is torch_type else t for t in pattern)] = _with_pytorch_layers(method)
    return methods


FUSER_METHODS = _fuser_methods()
