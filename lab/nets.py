"""The nets the experiments train: the regression task's four-layer tanh MLP (and the variants the
experiments train of it), the batch-norm paper's MNIST sigmoid MLP, a deep MLP to look at at
initialisation, and a small conv net. Each builds its norm layers from one registry, ``lab/norms.py``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from lab.norms import NORMS, Site, build


@dataclass(frozen=True)
class MLPModel:
    """What one model name of the tanh MLP means (``--models``): its norm layer, where it goes, and how the
    data is scaled."""

    label: str
    norm: str | None = None  # its norm layer: a name of lab/norms.py's NORMS
    norm_blocks: int = 4  # the blocks before this one get the norm layer ...
    norm_from: int = 0  # ... from this one on
    standardize_x: bool = False  # train and test on (x - mean) / std of the training inputs
    standardize_y: bool = False  # train on standardised targets; map predictions back for the test MSE
    center_y: bool = False  # train on y - mean only (standardize_y: centred and scaled)
    scale_y: bool = False  # train on y / std only
    sync: bool = False  # MyBN only: statistics over the whole batch when it is split over processes
    momentum: float | None = None  # the norm layers' momentum, where it is not the experiment's
    noise: bool = False  # Santurkar et al.'s non-stationary noise after the norm layer (or the Linear)

    def make_norm(self, block: int, width: int, bn_momentum: float, seed: int = 0, backend: str | None = None,
                  dtype: torch.dtype | None = None) -> nn.Module:
        if not self.norm_from <= block < self.norm_blocks or (self.norm is None and not self.noise):
            return nn.Identity()
        momentum = bn_momentum if self.momentum is None else self.momentum
        site = Site(width, momentum=momentum, backend=backend, sync=self.sync, dtype=dtype)
        norm = build(self.norm or "plain", site)
        return nn.Sequential(norm, NonStationaryNoise(width, seed * 1000 + block)) if self.noise else norm


MLP_MODELS: dict[str, MLPModel] = {
    "plain": MLPModel("plain (no norm)"),
    "torch_bn": MLPModel("nn.BatchNorm1d", "torch_bn"),
    "my_bn": MLPModel("MyBN", "my_bn", sync=True),
    # with the batch split over processes (train.py --nproc): MyBN on each process's share alone
    "my_bn_local": MLPModel("MyBN, statistics per process", "my_bn"),
    # controls: the plain net with one thing changed
    "plain_std_x": MLPModel("plain, inputs standardised", standardize_x=True),
    "plain_std_y": MLPModel("plain, targets standardised", standardize_y=True),
    "plain_std_xy": MLPModel("plain, both standardised", standardize_x=True, standardize_y=True),
    "bn_first": MLPModel("BN before the first tanh only", "my_bn", norm_blocks=1, sync=True),
    "plain_center_y": MLPModel("plain, targets centred only", center_y=True),
    "plain_scale_y": MLPModel("plain, targets scaled only", scale_y=True),
    "bn_last": MLPModel("BN before the last tanh only", "my_bn", norm_from=3, sync=True),
    "layer_norm": MLPModel("LayerNorm in every block", "layer_norm"),
    # which explanation of batch norm holds (experiments noisy and running_stats)
    "my_bn_noisy": MLPModel("MyBN + non-stationary noise", "my_bn", sync=True, noise=True),
    "plain_noisy": MLPModel("plain + non-stationary noise", noise=True),
    "my_bn_m01": MLPModel("MyBN, momentum 0.1", "my_bn", sync=True, momentum=0.1),
}
MODELS = ("plain", "torch_bn", "my_bn")  # the main comparison
BN_PAIR = ("torch_bn", "my_bn")  # the two batch-norm nets: PyTorch's layer and ours
CONTROLS = ("plain_std_x", "plain_std_y", "plain_std_xy", "plain_center_y", "plain_scale_y", "bn_first", "bn_last",
            "layer_norm")


class NonStationaryNoise(nn.Module):
    """Algorithm 1 of Santurkar et al. (2018), "noisy BatchNorm": in training, each step, a ← s·a + m.

    Per step and unit: μ ~ U(-0.5, 0.5), σ ~ U(1, 1.25). Per sample and unit: m ~ U(μ - 0.1, μ + 0.1),
    s ~ N(σ, 0.1). A shift and scale that change every step, so that the distribution of what the
    next layer sees moves all the time, whatever the layers below do. Eval mode adds nothing. The
    draws come from the module's own generator, seeded at construction, so runs stay reproducible
    and nothing else's random numbers move.
    """

    def __init__(self, width: int, seed: int):
        super().__init__()
        self.width = width
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """One step's noise for n samples: the scale s and the shift m, each (n, width)."""
        g, shape = self.generator, (n, self.width)
        mu = torch.rand(self.width, generator=g, dtype=dtype) - 0.5  # (width,)
        sigma = 1 + 0.25 * torch.rand(self.width, generator=g, dtype=dtype)
        m = mu + 0.2 * torch.rand(shape, generator=g, dtype=dtype) - 0.1  # U(μ - 0.1, μ + 0.1)
        s = sigma + 0.1 * torch.randn(shape, generator=g, dtype=dtype)  # N(σ, 0.1)
        return s, m

    def forward(self, a: Tensor) -> Tensor:
        if not self.training:
            return a
        s, m = self.draw(a.size(0), a.dtype)
        return torch.addcmul(m.to(a.device), s.to(a.device), a)

    def extra_repr(self) -> str:
        return f"{self.width}"


class Block(nn.Module):
    """Linear -> norm -> tanh (or another activation)."""

    def __init__(self, d_in: int, d_out: int, norm: nn.Module, act: nn.Module | None = None, **factory):
        super().__init__()
        self.linear = skip_init(nn.Linear, d_in, d_out, **factory)  # initialised by the net that holds it
        self.norm = norm
        self.act = nn.Tanh() if act is None else act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.linear(x)))


class TanhMLP(nn.Module):
    """Linear(1, 10) -> [norm] -> tanh, three more Linear(10, 10) -> [norm] -> tanh, Linear(10, 1).

    ``model`` names an ``MLPModel``, which picks the norm layer and the blocks that get it, and
    ``mybn_backend`` the backend of its MyBN layers (see ``MyBN``; None: the default). The Linear
    layers are initialised from ``seed`` alone, exactly as ``nn.Linear`` initialises itself, so for
    one seed every variant starts from identical weights and differs only in its norm layers.
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
        mybn_backend: str | None = None,
    ):
        super().__init__()
        if model not in MLP_MODELS:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MLP_MODELS)}")
        spec = MLP_MODELS[model]
        factory = {"dtype": dtype}  # built on the CPU, where the generator is; move it with .to()
        self.model = model
        norms = [spec.make_norm(i, width, bn_momentum, seed, mybn_backend, dtype) for i in range(depth)]
        self.blocks = nn.Sequential(*(Block(1 if i == 0 else width, width, norms[i], **factory) for i in range(depth)))
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


class SigmoidMLP(nn.Module):
    """The batch-norm paper's MNIST network (Ioffe & Szegedy 2015, §4.1): 784-100-100-100-10 with
    sigmoid units, batch norm (if any) before each sigmoid, softmax cross-entropy on the output.
    Built of the same ``Block``s as ``TanhMLP``, so the same diagnostics and probes apply.

    ``norm``: "plain", "torch_bn" (``nn.BatchNorm1d``) or "my_bn" (``MyBN``). Weights are drawn from
    N(0, ``init_std``²), "small Gaussian" as the paper says, biases start at 0, all from ``seed``
    alone, so for one seed every variant starts from identical weights. ``mybn_backend``: as in
    ``TanhMLP``.
    """

    NORMS = ("plain", "torch_bn", "my_bn")

    def __init__(self, norm: str = "plain", seed: int = 0, *, init_std: float = 0.1, bn_momentum: float = 0.1,
                 mybn_backend: str | None = None):
        super().__init__()
        if norm not in self.NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(self.NORMS)}")
        self.model = norm
        widths = [784, 100, 100, 100]
        self.blocks = nn.Sequential(*(
            Block(d_in, d_out, build(norm, Site(d_out, momentum=bn_momentum, backend=mybn_backend)), nn.Sigmoid())
            for d_in, d_out in zip(widths[:-1], widths[1:], strict=True)
        ))
        self.head = skip_init(nn.Linear, widths[-1], 10)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, init_std, generator=gen)
                    module.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x))


class DeepMLP(nn.Module):
    """A deep fully connected net to look at at initialisation: ``depth`` Blocks of Linear(width, width)
    -> norm -> activation ("relu" or "linear"), then Linear(width, 10). ``norm``: "plain" (none) or
    "my_bn" (``MyBN``; γ = 1 and β = 0 at initialisation, as in any batch-norm layer). Weights N(0,
    gain / fan-in) with gain 2 for ReLU (He) and 1 for linear, zero biases, all drawn from ``seed`` alone:
    for one seed both norms start from identical weights."""

    NORMS = ("plain", "my_bn")

    def __init__(self, norm: str = "plain", seed: int = 0, *, depth: int = 50, width: int = 128,
                 activation: str = "relu", dtype: torch.dtype | None = None):
        super().__init__()
        if norm not in self.NORMS or activation not in ("relu", "linear"):
            raise ValueError(f"DeepMLP: norm one of {self.NORMS} and activation relu or linear, got {norm!r}, "
                             f"{activation!r}")
        act = nn.ReLU if activation == "relu" else nn.Identity
        self.blocks = nn.Sequential(*(Block(width, width, build(norm, Site(width, dtype=dtype)), act(), dtype=dtype)
                                      for _ in range(depth)))
        self.head = skip_init(nn.Linear, width, 10, dtype=dtype)
        gen, gain = torch.Generator().manual_seed(seed), 2.0 if activation == "relu" else 1.0
        with torch.no_grad():
            for layer in (*(b.linear for b in self.blocks), self.head):
                layer.weight.normal_(0.0, math.sqrt(gain / layer.in_features), generator=gen)
                layer.bias.zero_()

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Each block's output (N, width), and the logits (N, 10)."""
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs, self.head(x)


class ConvNet(nn.Module):
    """A small VGG-style net for 8×8 digit images: ``depth`` 3×3 convolutions of ``width`` channels
    (padding 1), each followed by the norm under test and ReLU, then global average pooling and a linear
    classifier of 10 digits.

    ``norm``: one of ``NORMS``: none, ``nn.BatchNorm2d``, ``MyBN2d``, ``nn.GroupNorm`` (``groups``
    groups), LayerNorm over (C, H, W) as ``nn.GroupNorm`` with one group, Batch Renormalization
    (``MyBatchRenorm2d``, ``renorm`` = (r_max, d_max, warmup)) and ghost batch norm (``MyGhostBN2d``).
    The convolutions and the classifier are drawn from ``seed`` alone, with He initialisation (normal,
    fan-in, for ReLU: an honest plain baseline, not a strawman) and zero biases, so for one seed every
    variant starts from identical weights and differs only in its norm layers. ``affine=False``: batch
    norm (``torch_bn``, ``my_bn``) without γ and β.

    ``seed`` a sequence of K seeds: K such nets side by side in one module, each member exactly the net
    of its seed. Each layer holds the members' channels one after the other: the convolutions and the
    classifier (a 1×1 convolution) are grouped by member, and the norm layers are per channel (or per
    group of one member's channels), so no number crosses from one member to another and one step of
    the module is a step of each member on its own batch: the input is (N, K, 1, 8, 8), member k's
    batch at [:, k], the output (N, K, 10). It costs one net's Python and dispatch overhead a step,
    which at small batches is most of the time (``torch.func.vmap`` over members does not remove
    MyBN's: its custom autograd.Function is traced once per member).
    """

    NORMS = NORMS  # every norm of lab/norms.py

    def __init__(self, norm: str = "plain", seed: int | Sequence[int] = 0, *, width: int = 16, depth: int = 3,
                 groups: int = 4, bn_momentum: float = 0.1, renorm: tuple = (3.0, 5.0, (0, 0, 0)),
                 ghost_batch_size: int = 8, mybn_backend: str | None = None, affine: bool = True,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
        self.model = norm
        self.seeds = (seed,) if isinstance(seed, int) else tuple(seed)
        self.grouped = not isinstance(seed, int)  # the input and output carry a member dimension
        k = self.k = len(self.seeds)
        if not k:
            raise ValueError("ConvNet needs at least one seed")
        self.convs = nn.ModuleList(nn.Conv2d(k * (1 if i == 0 else width), k * width, 3, padding=1, groups=k,
                                             dtype=dtype) for i in range(depth))
        site = Site(k * width, image=True, members=k, momentum=bn_momentum, backend=mybn_backend, affine=affine,
                    groups=groups, renorm=renorm, ghost_batch_size=ghost_batch_size, dtype=dtype)
        self.norms = nn.ModuleList(build(norm, site) for _ in range(depth))
        self.head = nn.Conv2d(k * width, k * 10, 1, groups=k, dtype=dtype)  # a linear classifier per member
        with torch.no_grad():
            for member, s in enumerate(self.seeds):
                gen = torch.Generator().manual_seed(s)
                for layer in (*self.convs, self.head):
                    rows = layer.out_channels // k
                    weight = layer.weight[member * rows:(member + 1) * rows]  # (out, in, kh, kw): this member's
                    weight.normal_(0.0, math.sqrt(2.0 / weight[0].numel()), generator=gen)  # He: sqrt(2 / fan-in)
                    layer.bias.zero_()

    @staticmethod
    def member_losses(logits: Tensor, y: Tensor) -> Tensor:
        """Each member's mean cross-entropy over its own batch: logits (N, K, 10), y (N, K) -> (K,). Their
        sum is the loss to differentiate: the members share no parameter, so each gets its own gradient."""
        return nn.functional.cross_entropy(logits.permute(0, 2, 1), y, reduction="none").mean(0)

    def forward(self, x: Tensor) -> Tensor:
        if self.grouped != (x.dim() == 5):
            shape = "(N, K, 1, H, W) for K members" if self.grouped else "(N, 1, H, W)"
            raise ValueError(f"ConvNet of {self.k} member(s) expects {shape}, got {tuple(x.shape)}")
        x = x.flatten(1, 2) if self.grouped else x  # (N, K·1, H, W)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = torch.relu(norm(conv(x)))  # (N, K·width, H, W)
        out = self.head(x.mean((2, 3), keepdim=True)).flatten(1)  # (N, K·10)
        return out.unflatten(1, (self.k, 10)) if self.grouped else out
