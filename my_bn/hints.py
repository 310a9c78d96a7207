"""Type names for the annotations of the package's public functions (for type checkers; ``py.typed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import torch

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
else:  # torch.distributed is not imported here for the annotations alone
    ProcessGroup = object

Device: TypeAlias = "torch.device | str | int | None"  # what a device= argument of PyTorch takes
