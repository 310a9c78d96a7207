"""The network of the experiment: one four-layer tanh MLP, built with or without batch norm."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from my_bn import MyBN

# model name -> the norm layer placed between each Linear and its tanh
NORMS: dict[str, type[nn.Module] | None] = {
    "plain": None,
    "torch_bn": nn.BatchNorm1d,
    "my_bn": MyBN,
}
MODELS = tuple(NORMS)


class Block(nn.Module):
    """Linear -> norm -> tanh."""

    def __init__(self, d_in: int, d_out: int, norm: type[nn.Module] | None, bn_momentum: float, **factory):
        super().__init__()
        self.linear = skip_init(nn.Linear, d_in, d_out, **factory)  # initialised by TanhMLP
        self.norm = nn.Identity() if norm is None else norm(d_out, momentum=bn_momentum, **factory)
        self.act = nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.linear(x)))


class TanhMLP(nn.Module):
    """Linear(1, 10) -> [norm] -> tanh, three more Linear(10, 10) -> [norm] -> tanh, Linear(10, 1).

    ``model`` picks the norm layer (see ``NORMS``). The Linear layers are initialised from
    ``seed`` alone, exactly as ``nn.Linear`` initialises itself, so for one seed every variant
    starts from identical weights and differs only in its norm layers.
    """

    def __init__(
        self,
        model: str = "plain",
        seed: int = 0,
        *,
        width: int = 10,
        depth: int = 4,
        bn_momentum: float = 0.5,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if model not in NORMS:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        factory = {"dtype": dtype}  # built on the CPU, where the generator is; move it with .to()
        self.model = model
        self.blocks = nn.Sequential(
            *(Block(1 if i == 0 else width, width, NORMS[model], bn_momentum, **factory) for i in range(depth))
        )
        self.head = skip_init(nn.Linear, width, 1, **factory)
        self.init_linear_(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def init_linear_(self, generator: torch.Generator) -> None:
        """nn.Linear's own default initialisation, drawn from ``generator`` in layer order."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))
