"""The lr experiment (experiments/lr.py): divergence, its vmap ensembles against the nets trained alone,
the one-step ratio."""

import dataclasses

import pytest
import torch

from experiments import lr
from helpers import SMALL
from lab.regression import train_run


def test_divergence_detection_flags_a_run_that_blows_up():
    calm = {"train_loss": [3.0, 2.0], "test_mse": [5.0, 4.0, 1.0]}
    assert not lr.diverged(calm)
    assert lr.diverged({**calm, "train_loss": [3.0, float("inf")]})
    assert lr.diverged({**calm, "test_mse": [5.0, float("nan"), float("nan")]})
    assert lr.diverged({**calm, "test_mse": [5.0, 4.0, 6.0]})  # ends worse than it began
    runs = [r for r in lr.train_members(SMALL, (5.0, "plain")) if r["optimizer"] == "sgd"]
    top = [run_ for run_ in runs if run_["lr"] == max(lr.GRIDS["sgd"])]  # the top of the SGD grid blows up at once
    assert top and all(lr.diverged(run_) for run_ in top)
    assert not lr.diverged(next(run_ for run_ in runs if run_["lr"] == min(lr.GRIDS["sgd"])))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("model", ["plain", "my_bn"])
def test_ensemble_trains_each_member_as_alone(optimizer, model):
    """The vmap ensemble of the lr grid (both optimisers, side by side) against train_run, one cell at a
    time, in float64."""
    config = dataclasses.replace(SMALL, dtype="float64", epochs=1)
    members = [m for m in lr.train_members(config, (5.0, model)) if m["optimizer"] == optimizer]
    for lr_ in (lr.GRIDS[optimizer][0], lr.GRIDS[optimizer][2]):
        alone = train_run(dataclasses.replace(config, optimizer=optimizer, lr=lr_), (5.0, model, 0))
        together = next(m for m in members if m["lr"] == lr_)
        torch.testing.assert_close(torch.tensor(together["test_mse"]), torch.tensor(alone["test_mse"]), rtol=1e-9,
                                   atol=0)
        torch.testing.assert_close(torch.tensor(together["train_loss"]), torch.tensor(alone["train_loss"]), rtol=1e-9,
                                   atol=0)


def test_one_step_ratio_starts_at_one():
    ratios = lr.one_step_ratios(SMALL, 5.0, "my_bn", 0)
    assert len(ratios) == len(lr.ALPHAS) and abs(ratios[0] - 1) < 1e-3 and min(ratios) < 1
