"""The landscape experiment (experiments/landscape.py): its measures on a quadratic, whose answer is known."""

import math

import torch
from torch import nn

from experiments import landscape


def test_landscape_measures_on_a_quadratic():
    """A linear model under MSE: the loss along θ − ηg is a parabola, and ∇L(θ) − ∇L(θ − ηg) = η·H·g,
    so the effective β-smoothness is ‖H·g‖ / ‖g‖ exactly, whatever η."""
    torch.manual_seed(0)
    net = nn.Linear(1, 1).double()
    x = torch.randn(64, 1, dtype=torch.float64)
    y = 3 * x + 1
    loss = nn.functional.mse_loss(net(x), y)
    loss.backward()
    g = torch.cat([net.weight.grad.flatten(), net.bias.grad])
    h = 2 * torch.tensor([[x.square().mean(), x.mean()], [x.mean(), 1.0]], dtype=torch.float64)
    etas = [0.01, 0.05, 0.1]
    out = landscape.landscape_of(net, x, y, None, etas)
    assert math.isclose(out["beta"], (h @ g).norm().item() / g.norm().item(), rel_tol=1e-9)
    expected = [loss.item() - e * g.dot(g).item() + e**2 / 2 * g @ h @ g for e in etas]
    assert math.isclose(out["loss_min"], min(expected), rel_tol=1e-9)
    assert math.isclose(out["loss_max"], max(expected), rel_tol=1e-9)
    assert math.isclose(out["gdiff_max"], max(etas) * (h @ g).norm().item(), rel_tol=1e-9)


class _Normalised(nn.Module):
    """Two blocks, each a Linear that batch norm (no affine) follows, and nothing else with parameters: the
    loss does not change when a block's Linear is rescaled."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.blocks = nn.ModuleList()
        for d_in, d_out in ((2, 4), (4, 3)):
            block = nn.Module()
            block.linear, block.norm = nn.Linear(d_in, d_out).double(), nn.BatchNorm1d(d_out, affine=False,
                                                                                       eps=1e-14).double()
            self.blocks.append(block)

    def forward(self, x):
        for block in self.blocks:
            x = torch.tanh(block.norm(block.linear(x)))
        return x.sum(1, keepdim=True)


def test_at_norms_reads_the_same_function_in_another_parametrisation():
    """For a net that batch norm makes blind to each block's scale, rescaling every block by c gives the
    gradient g/c, so a step η from there is a step η/c² from the weights as they are: the loss spread is
    that of η/c², the gradient change 1/c times it, β-smoothness 1/c² times it. The net, its gradient and
    buffers are put back."""
    net, x = _Normalised(), torch.randn(32, 2, dtype=torch.float64)
    y = torch.randn(32, 1, dtype=torch.float64)
    nn.functional.mse_loss(net(x), y).backward()
    before = [p.detach().clone() for p in net.parameters()], [p.grad.clone() for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    norms = [block.linear.weight.norm().item() for block in net.blocks]
    c, etas = 3.0, [0.05, 0.1, 0.2]
    scaled = landscape.at_norms(net, x, y, None, etas, [c * n for n in norms])
    plain = landscape.landscape_of(net, x, y, None, [e / c**2 for e in etas])
    assert math.isclose(scaled["loss"], plain["loss"], rel_tol=1e-9)
    for key, power in (("loss_min", 0), ("loss_max", 0), ("gdiff_max", 1), ("beta", 2)):
        assert math.isclose(scaled[key] * c**power, plain[key], rel_tol=1e-6), key
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before[0], strict=True))
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), before[1], strict=True))
    assert all(torch.equal(b, v) for b, v in zip(net.buffers(), buffers, strict=True))


def test_matched_reading_pairs_probes_by_training_loss():
    """A probe pairs with the other net's probe nearest in loss ratio; only pairs within ×LOSS_MATCH count."""
    assert landscape.nearest_loss(2.0, [8.0, 3.0, 1.0, 2.1]) == 3
    assert landscape.nearest_loss(2.0, [4.0, 1.0]) == 0  # equally far in ratio: the first
    bn = {"loss": [10.0, 4.0, 1.0], "pair": [0, 1, 1], "beta_matched": [2.0, 6.0, 9.0]}
    plain = {"loss": [10.0, 4.4], "beta": [4.0, 3.0]}
    logs = landscape.matched_logs(bn, plain, "beta")  # the third probe's loss is 4.4 times its pair's: left out
    assert logs == [math.log(2.0 / 4.0), math.log(6.0 / 3.0)]
    own = landscape.as_own_match({"landscape": {"step": [0, 5], "loss": [1.0, 0.5], "beta": [3.0, 2.0],
                                                "gdiff_max": [1.0, 1.5]}})
    assert own["landscape"]["pair"] == [0, 1] and own["landscape"]["beta_matched"] == [3.0, 2.0]
    assert landscape.matched_logs(own["landscape"], own["landscape"], "beta") == [0.0, 0.0]


def test_a_tiny_run_reads_mybn_at_the_plain_nets_norms(tmp_path):
    """Every run of a tiny configuration has the matched records (MyBN's its own, the plain net's trivially
    its own); each of MyBN's pairs names a probe of the plain run of its setting and seed; the results load
    back, and the table and verdict read them."""
    from helpers import round_trip

    config = landscape.LandscapeSettings(seeds=[0, 1], epochs=2, ranges=[5.0], workers=1)
    results = {"experiment": "landscape", **landscape.run(config, log=lambda _: None)}
    loaded = round_trip(results, tmp_path)
    for run_ in (*loaded["runs"], *loaded["recipe"]):
        ls = run_["landscape"]
        if run_["model"] == "plain":
            assert ls["pair"] == list(range(len(ls["step"]))) and ls["beta_matched"] == ls["beta"]
        else:
            assert len(ls["pair"]) == len(ls["step"]) and all(isinstance(j, int) for j in ls["pair"])
    assert "What the verdict reads" in landscape.landscape_table(loaded)
    (row,) = landscape.EXPERIMENT.verdicts(loaded)
    assert len(row.parts) == len(landscape.SETTINGS) * 2 * len(landscape.VERDICT_MEASURES)
