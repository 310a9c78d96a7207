"""Residual conv nets of any depth for the 8×8 digits, with the ways the field trains them deep: batch norm,
and the three that replace it (SkipInit, Fixup, normaliser-free with Scaled Weight Standardisation), beside
the plain He-initialised net; and the same nets without their skip connections.

One net, ``ResNet``, parameterised by its variant from one registry (``VARIANTS``: name -> label, colour,
norm, scheme, skip). Each block is pre-activation (He et al. 2016, "Identity Mappings in Deep Residual
Networks", the form De & Smith 2020 analyse):

    x_{l+1} = x_l + s_l · f_l(x_l),   f_l(x) = conv2(relu(norm2(conv1(relu(norm1(x))))))

with s_l = 1 and the norm the identity (He) or ``MyBN2d`` (batch norm), and without the skip
x_{l+1} = f_l(x_l). The schemes, each from its paper:

- **SkipInit** (De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function
  in Deep Networks"; its abstract: "We use this insight to develop a simple initialization scheme that can
  train deep residual networks without normalization"): in the words of a review of the paper
  (dl.reviews, 2020), "a scalar trainable multiplier added to each residual branch [...] and initialized at
  zero or a small value (less than 1/√d, where d is the number of residual blocks)". Here α = 0, so the net
  starts as the identity on its stream (a test).
- **Fixup** (Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without Normalization"), as
  Papers with Code's page on it gives the paper's rule: "1. Initialize the classification layer and the
  last layer of each residual branch to 0. 2. Initialize every other layer using a standard method, e.g.
  Kaiming Initialization, and scale only the weight layers inside residual branches by L^(1/(2m−2)) [the
  paper's exponent is −1/(2m−2)]. 3. Add a scalar multiplier (initialized at 1) in every branch and a scalar
  bias (initialized at 0) before each convolution, linear, and element-wise activation layer." L blocks of
  m = 2 layers: the first convolution of each branch is scaled by L^(−1/2) (``fixup_scale``).
- **Normaliser-free, Scaled WS** (Brock, De & Smith 2021, "Characterizing signal propagation to close the
  performance gap in unnormalized ResNets"; its abstract: "Crucial to our success is an adapted version of
  the recently proposed Weight Standardization. Our analysis tools show how this technique preserves the
  signal in networks with ReLU or Swish activation functions by ensuring that the per-channel activation
  means do not grow with depth"): blocks x_{l+1} = x_l + α f_l(x_l / β_l), β_l = √Var(x_l) the stream's
  expected std (Var(x_{l+1}) = Var(x_l) + α², so β_l = √(1 + l·α²) from a stem of unit variance), α = 0.2;
  every convolution of a branch Scaled-Weight-Standardised as timm's ``ScaledStdConv2d`` does it: each
  output channel's filter standardised over its fan-in N, times γ/√N and a learnable gain per channel
  (initialised to 1), with γ = √2 / √(1 − 1/π) for ReLU (``RELU_GAIN``: the gain that makes γ·relu(z) of
  unit variance for z ~ N(0, 1); a test checks it by quadrature).

The weights every variant shares are drawn from the seed alone: the stem (a 3×3 convolution of stride 2,
8×8 -> 4×4, gain 1: its input is standardised pixels, not a ReLU's output, so the stream starts at unit
variance), each branch's two convolutions (He: normal, std √(2 / fan-in)) and the classifier; the schemes
rescale or standardise those same draws. Members: as ``lab.nets.ConvNet``, K nets side by side (one a
seed), each layer grouped by member, the input (N, K, 1, 8, 8), the output (N, K, 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lab.norms import Site, build

RELU_GAIN = math.sqrt(2.0) / math.sqrt(1.0 - 1.0 / math.pi)  # Scaled WS's γ for ReLU (Brock et al. 2021)
NF_ALPHA = 0.2  # the normaliser-free net's α, the paper's


@dataclass(frozen=True)
class Variant:
    """One way of training a residual net deep: its label and colour, its norm (of ``lab.norms``: "plain" or
    "my_bn"), its scheme ("he", "skipinit", "fixup", "nf") and whether its blocks keep their skip path."""

    label: str
    colour: tuple[str, str]
    norm: str = "plain"
    scheme: str = "he"
    skip: bool = True


VARIANTS: dict[str, Variant] = {
    "plain": Variant("no norm (He init)", ("#E4572E", "-")),
    "my_bn": Variant("MyBN2d", ("#2CA02C", "--"), norm="my_bn"),
    "skipinit": Variant("SkipInit (α = 0)", ("#9467BD", "-"), scheme="skipinit"),
    "fixup": Variant("Fixup", ("#FF7F0E", "-."), scheme="fixup"),
    "nf": Variant("normaliser-free, Scaled WS", ("#8C564B", ":"), scheme="nf"),
    "plain_noskip": Variant("no norm, no skips", ("#E4572E", ":"), skip=False),
    "my_bn_noskip": Variant("MyBN2d, no skips", ("#2CA02C", ":"), norm="my_bn", skip=False),
}


def fixup_scale(blocks: int, layers: int = 2) -> float:
    """Fixup's factor on a branch's inner layers: L^(−1/(2m−2)) for L blocks of m layers."""
    return blocks ** (-1.0 / (2 * layers - 2))


def nf_betas(blocks: int, alpha: float = NF_ALPHA) -> list[float]:
    """The normaliser-free net's β_l = √Var(x_l), the stream's expected std at block l (0-based) from a unit
    variance at the stem: Var(x_{l+1}) = Var(x_l) + α²."""
    return [math.sqrt(1.0 + block * alpha**2) for block in range(blocks)]


class ScaledWSConv2d(nn.Conv2d):
    """A 3×3 convolution (grouped by member) whose weight is Scaled-Weight-Standardised on every forward:
    each output channel's filter standardised over its fan-in N (biased variance), divided by √N and
    multiplied by γ and by the channel's learnable ``gain``."""

    def __init__(self, channels: int, groups: int, gamma: float = RELU_GAIN, eps: float = 1e-5, **factory):
        super().__init__(channels, channels, 3, padding=1, groups=groups, **factory)
        self.gamma, self.eps = gamma, eps
        self.gain = nn.Parameter(torch.ones(channels, 1, 1, 1, **factory))

    def standardised(self) -> Tensor:
        fan_in = self.weight[0].numel()
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), correction=0, keepdim=True)  # (C_out, 1, 1, 1)
        return self.gain * self.gamma * (self.weight - mean) * torch.rsqrt((var + self.eps) * fan_in)  # not sqrt: the
        # same bits on any CPU (lab/numerics.py)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.standardised(), self.bias)


class ResNet(nn.Module):
    """``depth`` pre-activation residual blocks of ``width`` channels on a stride-2 stem, global average
    pooling and a linear classifier, in the variant ``variant`` of ``VARIANTS`` (module docstring).

    ``norms``: its batch-norm layers in forward order (``lab.loop.precise_statistics`` reads them).
    ``forward(x, trace=None)``: where ``trace`` is a list, each block appends (its input stream x_l, its
    branch's contribution s_l · f_l(x_l)) to it: the signal-propagation measurements read them.
    """

    def __init__(self, variant: str = "plain", seed: int | Sequence[int] = 0, *, depth: int = 16, width: int = 8,
                 bn_momentum: float = 0.1, mybn_backend: str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        spec = self.spec = VARIANTS[variant]
        self.model, self.depth, self.width = variant, depth, width
        self.seeds = (seed,) if isinstance(seed, int) else tuple(seed)
        self.grouped = not isinstance(seed, int)
        k = self.k = len(self.seeds)
        if not k:
            raise ValueError("ResNet needs at least one seed")
        factory = {"dtype": dtype}
        channels = k * width

        def conv() -> nn.Conv2d:
            if spec.scheme == "nf":
                return ScaledWSConv2d(channels, k, **factory)
            return nn.Conv2d(channels, channels, 3, padding=1, groups=k, **factory)

        self.stem = nn.Conv2d(k, channels, 3, stride=2, padding=1, groups=k, **factory)
        self.convs = nn.ModuleList(conv() for _ in range(2 * depth))  # block l: convs[2l], convs[2l + 1]
        site = Site(channels, image=True, members=k, momentum=bn_momentum, backend=mybn_backend, dtype=dtype)
        self.norms = nn.ModuleList(build(spec.norm, site) for _ in range(2 * depth + 1)) if spec.norm != "plain" \
            else nn.ModuleList()  # the last: before the head
        self.head = nn.Conv2d(channels, k * 10, 1, groups=k, **factory)
        scalars = {"skipinit": 1, "fixup": 5}.get(spec.scheme, 0)  # per block and member
        # SkipInit: α. Fixup: the biases before conv1, relu, conv2 and after the branch, then its multiplier.
        self.scalars = nn.Parameter(torch.zeros(depth, scalars, k, **factory)) if scalars else None
        self.init_weights_()

    @torch.no_grad()
    def init_weights_(self) -> None:
        k, scheme = self.k, self.spec.scheme
        for member, s in enumerate(self.seeds):
            gen = torch.Generator().manual_seed(s)
            for layer, gain in ((self.stem, 1.0), *((c, 2.0) for c in self.convs), (self.head, 2.0)):
                rows = layer.out_channels // k
                weight = layer.weight[member * rows:(member + 1) * rows]  # (out, in, kh, kw): this member's
                weight.normal_(0.0, math.sqrt(gain / weight[0].numel()), generator=gen)
                layer.bias.zero_()
        if scheme == "fixup":
            for i, c in enumerate(self.convs):
                c.weight.mul_(fixup_scale(self.depth) if i % 2 == 0 else 0.0)
            self.head.weight.zero_()
            self.scalars[:, 4].fill_(1.0)  # the multipliers

    def member_scalar(self, block: int, index: int) -> Tensor:
        """Scalar ``index`` of ``block``, one per member, shaped to scale (N, K·width, H, W) member by member."""
        return self.scalars[block, index].repeat_interleave(self.width).view(1, -1, 1, 1)

    def branch(self, block: int, x: Tensor) -> Tensor:
        """f_l(x): the block's branch, times s_l (SkipInit's α, Fixup's multiplier; the normaliser-free α)."""
        conv1, conv2 = self.convs[2 * block], self.convs[2 * block + 1]
        if self.spec.scheme == "fixup":
            bias = lambda i: self.member_scalar(block, i)  # noqa: E731
            h = conv1(torch.relu(x) + bias(0))
            h = conv2(torch.relu(h + bias(1)) + bias(2))
            return h * self.member_scalar(block, 4) + bias(3)
        if self.spec.scheme == "nf":
            beta = nf_betas(self.depth)[block]
            return NF_ALPHA * conv2(torch.relu(conv1(torch.relu(x / beta))))
        norm1, norm2 = (self.norms[2 * block], self.norms[2 * block + 1]) if self.norms else (nn.Identity(),) * 2
        h = conv2(torch.relu(norm2(conv1(torch.relu(norm1(x))))))
        return h * self.member_scalar(block, 0) if self.spec.scheme == "skipinit" else h

    def forward(self, x: Tensor, trace: list | None = None) -> Tensor:
        if self.grouped != (x.dim() == 5):
            shape = "(N, K, 1, H, W) for K members" if self.grouped else "(N, 1, H, W)"
            raise ValueError(f"ResNet of {self.k} member(s) expects {shape}, got {tuple(x.shape)}")
        x = self.stem(x.flatten(1, 2) if self.grouped else x)  # (N, K·width, 4, 4)
        for block in range(self.depth):
            f = self.branch(block, x)
            if trace is not None:
                trace.append((x, f))
            x = x + f if self.spec.skip else f
        x = torch.relu(self.norms[-1](x) if self.norms else x)
        out = self.head(x.mean((2, 3), keepdim=True)).flatten(1)  # (N, K·10)
        return out.unflatten(1, (self.k, 10)) if self.grouped else out
