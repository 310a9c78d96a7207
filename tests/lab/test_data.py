"""lab/data.py: the regression data, its noise, and the 8×8 digits' split."""

import math

import pytest
import torch

from lab.data import DIGITS_TEST_PER_CLASS, default_noise_std, digits_split, make_dataset, spread_noise_std, target


def test_spread_noise_keeps_signal_to_noise_fixed():
    ratios = []
    for r in (0.5, 2.0, 10.0):
        d = make_dataset(r, seed=0, noise_std=spread_noise_std(r, 0.1), dtype=torch.float64)
        ratios.append((d.y_train - d.y_train.mean()).std().item() / d.noise_std)
    assert max(ratios) / min(ratios) < 1.1


@pytest.mark.parametrize("r", [0.5, 1.0, 5.0])
def test_dataset_shapes_and_range(r):
    d = make_dataset(r, seed=0)
    assert d.x_train.shape == d.y_train.shape == (1000, 1)
    assert d.x_test.shape == d.y_test.shape == (100, 1)
    for x in (d.x_train, d.x_test):
        assert x.dtype == torch.float32
        assert x.min().item() == pytest.approx(-r) and x.max().item() == pytest.approx(r)
        steps = x.squeeze(1).double().diff()
        torch.testing.assert_close(steps, torch.full_like(steps, steps[0].item()), rtol=0, atol=1e-6 * r)


def test_dataset_is_deterministic_per_seed_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = make_dataset(5, seed=3), make_dataset(5, seed=3), make_dataset(5, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    d64 = make_dataset(5, seed=3, dtype=torch.float64)
    assert torch.equal(d64.y_train.float(), a.y_train)  # float32 and float64 runs share the data


def test_noise_level_and_defaults():
    assert default_noise_std(1) == pytest.approx(0.1) and default_noise_std(5) == pytest.approx(1.0)
    for r, std in [(1, None), (5, None), (2, 0.3), (2, 0.0)]:
        d = make_dataset(r, seed=1, noise_std=std, a=2.0, b=-1.0, dtype=torch.float64)
        expected = default_noise_std(r) if std is None else std
        assert d.noise_std == expected and d.noise_floor == pytest.approx(expected**2)
        resid = d.y_train - target(d.x_train, 2.0, -1.0)
        assert resid.std().item() == pytest.approx(expected, rel=0.1, abs=1e-12)
        assert abs(resid.mean().item()) < 4 * expected / math.sqrt(1000) + 1e-12
    with pytest.raises(ValueError, match="input_range must be positive"):
        make_dataset(0, seed=0)


def test_the_digits_split_is_stratified_disjoint_and_fixed_by_seed():
    x_train, y_train, x_test, y_test = digits_split(0)
    assert x_train.shape == (1297, 1, 8, 8) and x_test.shape == (500, 1, 8, 8)
    assert torch.equal(torch.bincount(y_test), torch.full((10,), DIGITS_TEST_PER_CLASS))
    assert 0 <= x_train.min() and x_train.max() == 1.0  # grey levels 0..16, divided by 16
    rows = {tuple(r.flatten().tolist()) for r in x_train}
    assert sum(tuple(r.flatten().tolist()) in rows for r in x_test) < 5  # the set has a few duplicate images
    assert all(torch.equal(a, b) for a, b in zip(digits_split(0), (x_train, y_train, x_test, y_test), strict=True))
    assert not torch.equal(digits_split(1)[2], x_test)
