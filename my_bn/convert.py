"""``convert_to_mybn``: every batch-norm layer of a model becomes its ``MyBN`` counterpart, in place.

    model = convert_to_mybn(model)

| PyTorch's layer | becomes |
|---|---|
| ``nn.BatchNorm1d`` | ``MyBN`` |
| ``nn.BatchNorm2d`` | ``MyBN2d`` |
| ``nn.BatchNorm3d`` | ``MyBN3d`` |
| ``nn.SyncBatchNorm`` | ``MySyncBN`` (``MyBN(sync=True)``, any input rank from 2) |

Any other batch-norm layer (a subclass of one of these, whose forward may differ; a lazy layer
before its first call, which has no parameters yet) is left as it is, with a warning that names it.
"""

from __future__ import annotations

import warnings

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from my_bn.hints import ProcessGroup
from my_bn.layer import MyBN, MyBN2d, MyBN3d, MySyncBN

__all__ = ["convert_to_mybn"]

COUNTERPARTS = {nn.BatchNorm1d: MyBN, nn.BatchNorm2d: MyBN2d, nn.BatchNorm3d: MyBN3d, nn.SyncBatchNorm: MySyncBN}


def convert_to_mybn(module: nn.Module, *, sync: bool = False, process_group: ProcessGroup | None = None) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by its ``MyBN`` counterpart (see the module docstring).

    The new layers take over from the old ones:
    - their parameters and buffers, the same tensors, so an optimiser built on the model keeps working;
    - their train/eval mode;
    - their hooks (forward, forward-pre, backward, state-dict): the new layer shares the old one's
      hook tables, so the handles returned when they were registered still remove them;
    - their identity: a layer registered at several places of the model (one object, called twice)
      becomes one ``MyBN`` at all of them, which goes on sharing its statistics.

    ``nn.SyncBatchNorm`` becomes ``MySyncBN``, which synchronises over the same process group; it is
    not ``MyBN`` or ``MyBN2d`` because a ``SyncBatchNorm`` takes inputs of any rank from 2, and which
    one it will get is not known before it is called. With ``sync=True`` every ``MyBN`` layer of the
    result synchronises its statistics over ``process_group`` (None: the default group); a model that
    holds a layer which cannot (``MyBatchRenorm``, ``MyGhostBN``) is refused, unchanged.

    As with ``nn.SyncBatchNorm.convert_sync_batchnorm``, the result is a new object only when
    ``module`` is itself a batch-norm layer.
    """
    if sync:  # refused before any layer changes
        top = type(module).__name__
        refused = [f"{top}.{name} ({type(layer).__name__})" if name else f"{top}" for name, layer in
                   module.named_modules() if isinstance(layer, MyBN) and not layer.supports_sync]
        if refused:
            raise ValueError(f"convert_to_mybn(sync=True): {', '.join(refused)} cannot synchronise their statistics")
    left: list[str] = []
    new = _convert(module, sync, process_group, {}, left, type(module).__name__)
    if left:
        warnings.warn(
            f"convert_to_mybn left {len(left)} batch-norm layer(s) as they are: {', '.join(left)} (only "
            f"{', '.join(t.__name__ for t in COUNTERPARTS)} themselves are converted; run a lazy layer once first)",
            stacklevel=2,
        )
    return new


def _convert(module: nn.Module, sync: bool, group, memo: dict, left: list[str], path: str) -> nn.Module:
    """``module`` converted, or the conversion made already where this object was met before.

    ``memo`` maps id(old) to (old, new): holding old keeps its id from being reused meanwhile.
    """
    if id(module) in memo:
        return memo[id(module)][1]
    new = _converted_layer(module, sync, group)
    if new is None:
        new = module
        if isinstance(module, MyBN) and sync:
            module.sync, module.process_group = True, group
        elif isinstance(module, _BatchNorm) and not isinstance(module, MyBN):
            left.append(f"{path} ({type(module).__name__})")
    memo[id(module)] = (module, new)
    if new is module:
        for name, child in module._modules.items():  # every place, where named_children() skips a repeat
            if child is not None:
                module._modules[name] = _convert(child, sync, group, memo, left, f"{path}.{name}")
    return new


def _converted_layer(old: nn.Module, sync: bool, group) -> MyBN | None:
    """The ``MyBN`` layer that replaces ``old``, or None where ``old`` is not converted."""
    new_type = COUNTERPARTS.get(type(old))
    if new_type is None:
        return None
    if new_type is MySyncBN:
        sync, group = True, group if group is not None else old.process_group
    new = holding_tensors_of(old, new_type)
    new.sync, new.process_group = sync, group
    for name, value in vars(old).items():  # the hook tables, and which buffers are not saved
        if "hook" in name or name == "_non_persistent_buffers_set":
            setattr(new, name, value)
    return new


def holding_tensors_of(old: _BatchNorm, new_type: type[_BatchNorm]) -> _BatchNorm:
    """A ``new_type`` layer with ``old``'s settings, holding ``old``'s parameters and buffers (the same
    tensors) and in its train/eval mode: how a layer of one type takes over from one of another."""
    new = new_type(
        old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats,
        device="meta",  # placeholders only; the real tensors are moved over below
        bias=old.bias is not None,
    )
    for name, tensor in [*old.named_parameters(recurse=False), *old.named_buffers(recurse=False)]:
        setattr(new, name, tensor)
    return new.train(old.training)
