"""lab/nets.py: the tanh MLP's variants and the conv net, one network definition for every norm, MyBN2d in
lock-step with nn.BatchNorm2d in float64, and a grouped conv net as its members side by side."""

import math

import pytest
import torch
from torch import nn

from lab.data import digits_split
from lab.nets import CONTROLS, MODELS, ConvNet, TanhMLP
from my_bn import MyBN


def test_control_variants_are_built_as_described():
    assert set(CONTROLS) == {"plain_std_x", "plain_std_y", "plain_std_xy", "plain_center_y", "plain_scale_y",
                             "bn_first", "bn_last", "layer_norm"}
    bn_first, bn_last, layer_norm = (TanhMLP(name, seed=1) for name in ("bn_first", "bn_last", "layer_norm"))
    assert isinstance(bn_first.blocks[0].norm, MyBN)
    assert all(isinstance(block.norm, nn.Identity) for block in bn_first.blocks[1:])
    assert isinstance(bn_last.blocks[3].norm, MyBN)
    assert all(isinstance(block.norm, nn.Identity) for block in bn_last.blocks[:3])
    assert all(type(block.norm) is nn.LayerNorm and block.norm.normalized_shape == (10,) for block in layer_norm.blocks)
    plain = TanhMLP("plain", seed=1)
    for name in ("plain_std_x", "plain_std_y", "plain_std_xy", "plain_center_y", "plain_scale_y"):
        net = TanhMLP(name, seed=1)  # the plain net itself: only the data is scaled
        assert all(
            torch.equal(a, b) for a, b in zip(net.state_dict().values(), plain.state_dict().values(), strict=True)
        )


def test_variants_start_from_identical_linear_weights():
    state = torch.random.get_rng_state()
    nets = {m: TanhMLP(m, seed=7) for m in MODELS}
    assert torch.equal(torch.random.get_rng_state(), state)  # no hidden use of the global RNG
    linear = {m: {k: v for k, v in net.state_dict().items() if ".norm." not in k} for m, net in nets.items()}
    for m in MODELS[1:]:
        assert linear[m].keys() == linear["plain"].keys()
        for k, v in linear["plain"].items():
            assert torch.equal(linear[m][k], v), (m, k)
    assert not torch.equal(TanhMLP("plain", seed=8).head.weight, nets["plain"].head.weight)


def test_network_shape_and_parameter_counts():
    counts = {m: sum(p.numel() for p in TanhMLP(m).parameters()) for m in MODELS}
    # 1·10+10 + 3·(10·10+10) + 10+1 = 361 weights; each of the 4 BN layers adds gamma and beta (20)
    assert counts == {"plain": 361, "torch_bn": 441, "my_bn": 441}
    net = TanhMLP("my_bn", dtype=torch.float64)
    assert net(torch.randn(5, 1, dtype=torch.float64)).shape == (5, 1)
    assert [type(b.norm).__name__ for b in net.blocks] == ["MyBN"] * 4
    assert all(b.norm.momentum == 0.5 for b in net.blocks)
    with pytest.raises(ValueError, match="unknown model 'bn'"):
        TanhMLP("bn")


def test_every_norm_starts_from_the_same_he_initialised_weights():
    nets = {norm: ConvNet(norm, seed=3) for norm in ConvNet.NORMS}
    weights = {norm: [c.weight for c in net.convs] + [net.head.weight] for norm, net in nets.items()}
    for norm in ConvNet.NORMS:
        assert all(torch.equal(a, b) for a, b in zip(weights["plain"], weights[norm], strict=True)), norm
    second = nets["plain"].convs[1].weight
    assert abs(second.std().item() - math.sqrt(2 / (16 * 9))) < 0.01  # He: sqrt(2 / fan-in)
    x = torch.randn(6, 1, 8, 8)
    for norm, net in nets.items():
        out = net(x)
        out.sum().backward()
        assert out.shape == (6, 10) and all(p.grad is not None for p in net.parameters()), norm
    with pytest.raises(ValueError, match="unknown norm"):
        ConvNet("batch_norm")


def test_mybn2d_and_batchnorm2d_conv_nets_stay_together_in_float64():
    """Forty SGD steps on batches of 32 digits, then eval: the two nets' losses, weights and running
    statistics agree to float64 rounding, so every result of the conv net with MyBN2d is one for
    nn.BatchNorm2d too."""
    x_train, y_train, x_test, _ = digits_split(0)
    nets = {m: ConvNet(m, seed=0, dtype=torch.float64) for m in ("torch_bn", "my_bn")}
    opts = {m: torch.optim.SGD(net.parameters(), lr=0.1) for m, net in nets.items()}
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
    for step in range(40):
        idx = order[step * 32:(step + 1) * 32]
        x, y = x_train[idx].double(), y_train[idx]
        losses = {}
        for m, net in nets.items():
            loss = nn.functional.cross_entropy(net(x), y)
            opts[m].zero_grad()
            loss.backward()
            opts[m].step()
            losses[m] = loss.item()
        assert math.isclose(losses["torch_bn"], losses["my_bn"], rel_tol=1e-10), step
    for a, b in zip(nets["torch_bn"].state_dict().values(), nets["my_bn"].state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    out = {m: net.eval()(x_test.double()) for m, net in nets.items()}
    torch.testing.assert_close(out["torch_bn"], out["my_bn"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm", ConvNet.NORMS)
def test_a_convnet_of_k_seeds_is_those_k_nets_side_by_side(norm):
    """A ConvNet of seeds (3, 5, 7), each member on its own batches, against the three nets of those
    seeds trained alone (float64, SGD with momentum, three steps): the same losses at every step, the
    same weights and running statistics after, the same eval outputs. Batch Renorm with a warm-up that
    moves within the steps, ghost batches of 2 in batches of 6."""
    seeds, x_train, y_train = (3, 5, 7), *digits_split(0)[:2]
    kwargs = {"dtype": torch.float64, "ghost_batch_size": 2, "renorm": (2.0, 1.0, (1, 3, 2))}
    group, alone = ConvNet(norm, seeds, **kwargs), [ConvNet(norm, s, **kwargs) for s in seeds]
    opts = [torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9) for net in (group, *alone)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        idx = torch.stack([torch.randperm(len(x_train), generator=gen)[:6] for _ in seeds])  # (K, 6)
        x, y = x_train[idx].double(), y_train[idx]
        losses = ConvNet.member_losses(group(x.transpose(0, 1)), y.T)  # (K,)
        singles = [nn.functional.cross_entropy(net(x[k]), y[k]) for k, net in enumerate(alone)]
        torch.testing.assert_close(losses, torch.stack(singles), rtol=1e-12, atol=0)
        for opt, loss in zip(opts, [losses.sum(), *singles], strict=True):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for k, net in enumerate(alone):
        for name, tensor in net.state_dict().items():
            whole = group.state_dict()[name]
            if tensor.dim() == 0:  # num_batches_tracked: one count for all members
                assert torch.equal(whole, tensor), name
                continue
            rows = len(tensor)
            torch.testing.assert_close(whole[k * rows:(k + 1) * rows], tensor.view_as(whole[k * rows:(k + 1) * rows]),
                                       rtol=1e-12, atol=1e-14, msg=name)
    x = x_train[:9].double()
    out = group.eval()(x.unsqueeze(1).expand(-1, len(seeds), -1, -1, -1))  # (9, K, 10)
    for k, net in enumerate(alone):
        torch.testing.assert_close(out[:, k], net.eval()(x), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match=r"expects \(N, K, 1, H, W\)"):
        group(x)
