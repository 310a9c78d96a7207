"""The depth experiment (experiments/depth.py): its measures on cases with known answers, the deep net,
and the experiment on a tiny configuration."""

import dataclasses
import math

import pytest
import torch

from experiments import depth
from helpers import DOCS, VERDICTS, committed, verdict
from lab.nets import DeepMLP
from lab.results import load_results
from lab.stats import FAILS, HOLDS, UNDECIDED


def test_the_effective_rank_on_known_matrices():
    assert depth.effective_rank(torch.eye(6)) == pytest.approx(6.0)
    assert depth.effective_rank(torch.diag(torch.tensor([3.0, 3.0, 3.0, 0.0]))) == pytest.approx(3.0)
    u, v = torch.randn(20, 1, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    assert depth.effective_rank(u @ v) == pytest.approx(1.0, abs=1e-6)  # rank one
    x = torch.randn(30, 8, dtype=torch.float64)
    assert depth.effective_rank(5 * x) == pytest.approx(depth.effective_rank(x))  # blind to scale
    assert 1.0 < depth.effective_rank(x) < 8.0


def test_the_growth_rate_of_a_geometric_sequence():
    """‖∇W_l‖² = c · r^(L − l): the fit gives r, whatever c, and 1 for a constant."""
    for r in (1.0, 1.3, math.pi / (math.pi - 1), 0.8):
        grads = [7.0 * r ** (50 - layer) for layer in range(50)]
        assert depth.growth_rate(grads) == pytest.approx(r, rel=1e-9)


def test_the_large_batch_relu_rate_by_quadrature():
    """E[φ'(z)²] / Var(φ(z)) for ReLU and z ~ N(0, 1), on a fine grid: π / (π − 1); and the plain He net's
    factor, 2 · E[φ'(z)²], is 1."""
    z = torch.linspace(0, 12, 1_000_001, dtype=torch.float64)  # ReLU and its slope vanish below 0
    density = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    mean = lambda f: torch.trapezoid(f * density, z).item()  # noqa: E731  E[f(z)] over z ≥ 0 only
    relu, slope = z, torch.ones_like(z)
    assert mean(slope**2) / (mean(relu**2) - mean(relu) ** 2) == pytest.approx(depth.RELU_RATE, rel=1e-6)
    assert 2 * mean(slope**2) == pytest.approx(1.0, rel=1e-6)


def test_the_deep_net_starts_from_the_same_weights_with_either_norm():
    nets = {norm: DeepMLP(norm, 3, depth=6, width=16, dtype=torch.float64) for norm in DeepMLP.NORMS}
    weights = {n: [blk.linear.weight for blk in net.blocks] for n, net in nets.items()}
    assert all(torch.equal(a, b) for a, b in zip(*weights.values(), strict=True))
    assert abs(weights["plain"][2].std().item() - math.sqrt(2 / 16)) < 0.05  # He
    outputs, logits = nets["my_bn"](torch.randn(10, 16, dtype=torch.float64))
    assert len(outputs) == 6 and logits.shape == (10, 10)
    with pytest.raises(ValueError, match="activation relu or linear"):
        DeepMLP("my_bn", activation="tanh")


def test_the_experiment_on_a_tiny_configuration(tmp_path):
    config = depth.DepthSettings(depth=12, widths=[16], batch_sizes=[8, 16], seeds=[0, 1, 2], workers=1,
                                  limit=[32, 24])
    results = {"experiment": "depth", **depth.run(config, log=lambda _: None)}
    depth.check_format(results)
    rows = depth.EXPERIMENT.verdicts(results)
    assert len(results["runs"]) == (2 * 2 * 1 * 2 + 1) * 3  # the grid, and the large-batch cell
    assert all(math.isnan(v) for r in results["runs"][:3] for v in r["erank"])  # that cell first: the slowest, no
    # ranks
    assert len(rows[1].parts) == 3 and rows[1].parts[2].label == "at the predicted rate (width 32, batch 24)"
    assert all(math.isfinite(depth.rank_ratio(results, a, 16, 16).mean) for a in config.activations)
    assert depth.EXPERIMENT.tables(results)["depth-table"].count("\n| ") == 1 + 2 * 1 * 2 + 1  # header, rows, limit
    assert [v.explanation.split(" (")[0] for v in rows] == [
        "Batch norm keeps a deep net's rank at initialisation", "Batch norm makes gradients explode with depth at "
        "initialisation"]
    for name, draw in depth.EXPERIMENT.figures(results).items():
        draw(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 10_000


def test_claims_about_depth():
    """The depth page: ReLU, width 128, batch 64: the plain net's effective rank 53 after the first block and
    4.5 after the last, MyBN's 49, eleven times, seed by seed; linear: 20 against 8.4; MyBN's rank the
    higher at every width, batch and activation; the plain net's gradient growth within 3% of 1 (mean over
    seeds); MyBN's 1.486, its seeds between 1.464 and 1.504; 1.69 to 1.77 at batch 8."""
    from experiments import depth

    results = load_results(committed("depth"), depth.check_format)
    grid = depth.grid(results)
    page = " ".join(DOCS["depth"].split())
    ranks = {(a, m): [r["erank"] for r in results["runs"] if (r["model"], r["activation"], r["width"],
                                                                r["batch_size"]) == (m, a, 128, 64)]
             for a in grid.activations for m in ("plain", "my_bn")}
    mean = lambda runs, i: sum(r[i] for r in runs) / len(runs)  # noqa: E731
    assert [round(mean(ranks["relu", "plain"], i), 1) for i in (0, -1)] == [52.8, 4.5]
    assert round(mean(ranks["relu", "my_bn"], -1)) == 49
    assert round(math.exp(depth.rank_ratio(results, "relu", 128, 64).mean)) == 11  # "eleven times"
    assert [round(mean(ranks["linear", m], -1), 1) for m in ("my_bn", "plain")] == [20.4, 8.4]
    assert "(an effective rank of 4.5, from 53 after the first block)" in page and "(20 against 8.4" in page
    assert all(depth.rank_ratio(results, a, w, b).low > 0 for a in grid.activations for w in grid.widths
               for b in grid.batch_sizes)
    assert all(abs(math.exp(depth.rate(results, "plain", w, b, a).mean) - 1) < 0.03 for a in grid.activations
               for w in grid.widths for b in grid.batch_sizes)
    assert "is 1 within 3% at every width, batch and activation" in page
    bn = sorted(round(depth.growth_rate(r["grad_sq"]), 3) for r in results["runs"] if (r["model"], r["activation"],
                r["width"], r["batch_size"]) == ("my_bn", "relu", 128, 64))
    assert (bn[0], bn[-1]) == (1.464, 1.504) and "its seeds between 1.464 and 1.504" in page
    assert f"{math.exp(depth.rate(results, 'my_bn', 128, 64).mean):.3f}" == "1.486"
    small = [round(math.exp(depth.rate(results, "my_bn", w, 8).mean), 2) for w in grid.widths]
    assert small == [1.69, 1.77] and "1.69 to 1.77 per block" in page
    text = " ".join(VERDICTS.split())
    assert ("ReLU net keeps its representations' rank where the plain net's collapse (a linear one loses rank more "
            "slowly than the plain net, but loses it), and its gradients explode with depth, at batch 64 by 1–2% more "
            "per ReLU block than the rate mean-field theory gives for large batches") in text
    relu, linear = ({m: mean(ranks[a, m], -1) for m in ("plain", "my_bn")} for a in ("relu", "linear"))
    assert relu["my_bn"] > 0.75 * 64 and linear["plain"] < linear["my_bn"] < mean(ranks["linear", "my_bn"], 0) / 2
    ci = depth.rate(results, "my_bn", 128, 64)  # "1.3% above ..., which its 95% interval (1.476 to 1.496) leaves out"
    excess = math.exp(ci.mean) / depth.RELU_RATE - 1
    assert round(excess, 3) == 0.013 and 0.01 <= excess <= 0.02 and math.exp(ci.low) > depth.RELU_RATE  # "1–2%"
    assert f"1.3% above the large-batch value {depth.RELU_RATE:.3f}" in page
    assert f"which its 95% interval ({math.exp(ci.low):.3f} to {math.exp(ci.high):.3f}) leaves out" in page
    assert 1e7 < math.exp(ci.mean) ** 45 < 1e8 and "tens of millions of times" in page
    assert all(math.exp(depth.rate(results, "my_bn", w, 8).mean) > math.exp(ci.high) for w in grid.widths)
    assert "which is why deep batch-normalised nets" not in page  # nothing is trained here: not a claim of this page
    large = depth.rate(results, "my_bn", *grid.limit)  # "1.450, 1.2% below π/(π − 1) (its interval 1.448 to 1.452)"
    assert grid.limit == [512, 256] and f"{math.exp(large.mean):.3f}" == "1.450"
    assert round(1 - math.exp(large.mean) / depth.RELU_RATE, 3) == 0.012 and math.exp(large.high) < depth.RELU_RATE
    assert f"1.450, 1.2% *below* π/(π − 1) (its interval {math.exp(large.low):.3f} to {math.exp(large.high):.3f})" \
        in page
    assert depth.PREDICTED == 0.02 and "within 2% per block" in page and 2 < 1.02**40 < 2.3  # "a factor 2.2"
    assert verdict("Batch norm makes gradients explode", "at the predicted rate (width 512, batch 256)") == HOLDS
    assert ("Yang et al. argue that this is why deep batch-normalised nets without skip connections are hard to "
            "train; nothing is trained here, so this page does not test that ([residual](residual.md) trains such a "
            "net, and its residual twin)") in page


def test_the_predicted_rate_on_known_cases():
    """MyBN's growth per layer in the large-batch cell at π/(π − 1) give or take 0.1% (holds: within 2%),
    at 1.10 times it (does not hold), and spread from 0.97 to 1.03 times it over five seeds (not decided)."""
    config = dataclasses.asdict(depth.DepthSettings(depth=20, limit=[64, 32], seeds=[0, 1, 2, 3, 4]))

    def results(factors):
        runs = [{"model": "my_bn", "activation": "relu", "width": 64, "batch_size": 32, "seed": s,
                 "grad_sq": [(depth.RELU_RATE * f) ** (20 - layer) for layer in range(20)], "erank": [math.nan] * 20}
                for s, f in enumerate(factors)]
        return {"config": config, "depth": 20, "runs": runs}

    decide = lambda factors: depth.AT_PREDICTED.decide(depth.off_prediction(results(factors)))  # noqa: E731
    assert decide([0.999, 1.0, 1.001, 1.0005, 0.9995]) == HOLDS
    assert decide([1.1, 1.099, 1.101, 1.1, 1.1]) == FAILS
    assert decide([0.97, 1.03, 0.98, 1.02, 1.0]) == UNDECIDED
    assert math.exp(depth.off_prediction(results([1.1] * 5)).mean) == pytest.approx(1.1)
