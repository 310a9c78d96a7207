"""Every norm layer the nets can put after a linear layer or a convolution, in one registry: a name ->
how to build the layer, its label and its colour. The nets (``lab/nets.py``) build their norm layers
from it, the figures colour them by it, the tables name them by it; adding a norm is one entry here
(and its test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from my_bn import MyBatchRenorm2d, MyBN, MyBN2d, MyGhostBN2d


@dataclass(frozen=True)
class Site:
    """Where a norm layer goes and what its builder may read: ``features`` units (after a linear layer)
    or channels (``image``: after a convolution), ``members`` nets side by side in one module (a grouped
    ``ConvNet``: no statistic or group crosses from one member's channels into the next's), and the
    layer's own settings."""

    features: int
    image: bool = False
    members: int = 1
    momentum: float = 0.1
    backend: str | None = None  # MyBN's (None: the default)
    sync: bool = False  # MyBN's statistics over the whole batch when it is split over processes
    affine: bool = True
    groups: int = 4  # GroupNorm's groups per member
    renorm: tuple = (3.0, 5.0, (0, 0, 0))  # Batch Renormalization's r_max, d_max and warm-up
    ghost_batch_size: int = 8
    dtype: torch.dtype | None = None


@dataclass(frozen=True)
class Norm:
    """One norm: its name in the figures and tables, its colour and line style, and how to build it."""

    label: str
    colour: tuple[str, str]
    build: Callable[[Site], nn.Module]


def _batch_norm(site: Site) -> nn.Module:
    layer = nn.BatchNorm2d if site.image else nn.BatchNorm1d
    return layer(site.features, momentum=site.momentum, affine=site.affine, dtype=site.dtype)


def _my_bn(site: Site) -> nn.Module:
    layer = MyBN2d if site.image else MyBN
    return layer(site.features, momentum=site.momentum, affine=site.affine, backend=site.backend,
                 **({"sync": True} if site.sync else {}), dtype=site.dtype)


def _layer_norm(site: Site) -> nn.Module:
    """Each sample normalised over all its units: over (C, H, W) after a convolution, one group a member."""
    if site.image:
        return nn.GroupNorm(site.members, site.features, dtype=site.dtype)
    return nn.LayerNorm(site.features, dtype=site.dtype)


def _renorm(site: Site) -> nn.Module:
    r_max, d_max, warmup = site.renorm
    return MyBatchRenorm2d(site.features, momentum=site.momentum, backend=site.backend, r_max=r_max, d_max=d_max,
                           warmup=warmup, dtype=site.dtype)


NORMS: dict[str, Norm] = {
    "plain": Norm("no norm (He init)", ("#E4572E", "-"), lambda site: nn.Identity()),
    "torch_bn": Norm("nn.BatchNorm2d", ("#1F77B4", "-"), _batch_norm),
    "my_bn": Norm("MyBN2d", ("#2CA02C", "--"), _my_bn),
    "group_norm": Norm("GroupNorm (4 groups)", ("#D62728", "-."),
                       lambda site: nn.GroupNorm(site.groups * site.members, site.features, dtype=site.dtype)),
    "layer_norm": Norm("LayerNorm (C, H, W)", ("#F7B6D2", "-"), _layer_norm),
    "renorm": Norm("Batch Renorm", ("#17BECF", "--"), _renorm),
    "ghost": Norm("ghost BN", ("#BCBD22", "-"),
                  lambda site: MyGhostBN2d(site.features, momentum=site.momentum, backend=site.backend,
                                           ghost_batch_size=site.ghost_batch_size, dtype=site.dtype)),
}


def build(name: str, site: Site) -> nn.Module:
    """The layer ``name`` of ``NORMS`` at ``site``; a ValueError naming the choices for an unknown name."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose from {', '.join(NORMS)}")
    return NORMS[name].build(site)
