"""The mnist experiment: its data split, its network, and one short run end to end."""

import json

import pytest
import torch

import compare
import train
from bn_pytorch import SigmoidMLP
from data import MNIST_TRAIN_PER_CLASS, mnist_split
from experiments import mnist
from results import FORMAT


@pytest.fixture(scope="module")
def digits():
    return mnist_split(0)


def test_split_is_stratified_disjoint_and_fixed_by_seed(digits):
    x_train, y_train, x_test, y_test = digits
    assert x_train.shape == (4000, 784) and x_test.shape == (1000, 784) and x_train.dtype == torch.float32
    assert torch.equal(torch.bincount(y_train), torch.full((10,), MNIST_TRAIN_PER_CLASS))
    assert torch.equal(torch.bincount(y_test), torch.full((10,), 500 - MNIST_TRAIN_PER_CLASS))
    assert 0 <= x_train.min() and x_train.max() <= 1 and x_train.max() > 0.99  # pixels / 255
    # no test image is a training image: rows compared through a hash of their pixels (equal rows hash
    # alike), and any rows whose hashes meet compared pixel for pixel
    pixels = [(x * 255).round().long() for x in (x_train, x_test)]
    weights = torch.randint(-(2**40), 2**40, (784,), generator=torch.Generator().manual_seed(0))
    hashes = [(p * weights).sum(1) for p in pixels]
    meet = torch.isin(hashes[1], hashes[0]).nonzero().squeeze(1)
    assert not any((pixels[0] == pixels[1][i]).all(1).any() for i in meet.tolist())
    again = mnist_split(0)
    assert all(torch.equal(a, b) for a, b in zip(digits, again, strict=True))
    other = mnist_split(1)
    assert not torch.equal(other[0], x_train) and torch.equal(torch.bincount(other[1]), torch.bincount(y_train))


def test_the_three_nets_start_from_identical_weights():
    nets = {norm: SigmoidMLP(norm, seed=3) for norm in SigmoidMLP.NORMS}
    linears = {norm: [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)] for norm, net in nets.items()}
    for norm in ("torch_bn", "my_bn"):
        assert all(torch.equal(a, b) for a, b in zip(linears["plain"], linears[norm], strict=True))
    assert abs(linears["plain"][0].std().item() - 0.1) < 0.005  # N(0, 0.1²)
    with pytest.raises(ValueError, match="unknown norm"):
        SigmoidMLP("layer_norm")


def test_one_short_run_trains_end_to_end(tmp_path, monkeypatch):
    """train.py mnist for 3 epochs (201 steps) writes results that compare.py draws and tabulates;
    accuracy rises well above chance, and MyBN follows nn.BatchNorm1d."""
    monkeypatch.setattr(mnist, "EVERY", 50)
    out = tmp_path / "results"
    assert train.main(["mnist", "--seeds", "0", "--epochs", "3", "--out", str(out)]) == 0
    results = json.loads((out / "mnist" / "results.json").read_text())
    assert {(r["model"], r["lr"]) for r in results["runs"]} == {(m, lr) for m in ("plain", "torch_bn", "my_bn")
                                                                 for lr in (0.05, 0.5, 5.0)}  # fmt: skip
    for run_ in results["runs"]:
        assert run_["step"] == [0, 50, 100, 150, 200, 201] and len(run_["unit_q"][0]) == 3  # 3 epochs of 67
        assert len(run_["saturation"][0]) == 3 and len(run_["grad_norm"]) == 4 and len(run_["ics_rel"][0]) == 2
    at = {(r["model"], r["lr"]): r["test_acc"][-1] for r in results["runs"]}
    assert at["my_bn", 0.5] > 0.5 and abs(at["my_bn", 0.5] - at["torch_bn", 0.5]) < 0.02
    experiments = {"mnist": compare.load("mnist", out / "mnist" / "results.json")}
    mnist.plot_mnist(experiments["mnist"], tmp_path / "mnist.png")
    assert (tmp_path / "mnist.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 0.5 | MyBN |" in mnist.diagnostics_table(experiments["mnist"])
    table = mnist.mnist_table(experiments["mnist"])
    assert "| 0.5 (chosen) | MyBN |" in table and "after 201 steps" in table


def test_mnist_results_are_checked(tmp_path):
    path = tmp_path / "results.json"
    bad = {"format": FORMAT, "experiment": "mnist", "config": {}, "datasets": [], "runs": [{"model": "resnet"}]}
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="runs\\[0\\]"):
        compare.load("mnist", path)
