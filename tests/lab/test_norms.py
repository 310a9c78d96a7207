"""lab/norms.py, the one registry of norm layers: what each entry builds where, that every net takes its
norm layers from it, and that adding a norm to the conv net is one entry (a toy one, trained, drawn and
tabulated by the conv experiment)."""

import pytest
import torch
from torch import nn

from experiments import conv
from lab.data import digits_split
from lab.nets import MLP_MODELS, ConvNet, DeepMLP, SigmoidMLP, TanhMLP
from lab.norms import NORMS, Norm, Site, build
from lab.plotting import COLOURS
from my_bn import MyBatchRenorm2d, MyBN, MyBN2d, MyGhostBN2d

BUILT = {  # name -> what it builds after a linear layer and after a convolution (None: not a layer there)
    "plain": (nn.Identity, nn.Identity),
    "torch_bn": (nn.BatchNorm1d, nn.BatchNorm2d),
    "my_bn": (MyBN, MyBN2d),
    "group_norm": (nn.GroupNorm, nn.GroupNorm),
    "layer_norm": (nn.LayerNorm, nn.GroupNorm),
    "renorm": (MyBatchRenorm2d, MyBatchRenorm2d),
    "ghost": (MyGhostBN2d, MyGhostBN2d),
}


@pytest.mark.parametrize("name", NORMS)
def test_each_norm_builds_its_layer_with_the_sites_settings(name):
    assert set(BUILT) == set(NORMS)
    flat, image = (build(name, Site(12, image=i, members=3, momentum=0.3, dtype=torch.float64)) for i in (0, 1))
    assert (type(flat), type(image)) == BUILT[name]
    for layer in (flat, image):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            assert layer.momentum == 0.3 and layer.num_features == 12 and layer.weight.dtype == torch.float64
    assert COLOURS[name] == NORMS[name].colour and NORMS[name].label


def test_a_group_never_crosses_from_one_member_into_the_next():
    """After a convolution of 3 members × 4 channels: GroupNorm's groups and LayerNorm's one group a member."""
    assert build("group_norm", Site(12, image=True, members=3, groups=2)).num_groups == 6
    assert build("layer_norm", Site(12, image=True, members=3)).num_groups == 3
    with pytest.raises(ValueError, match="unknown norm 'batch_norm'; choose from plain, torch_bn"):
        build("batch_norm", Site(4))


def test_every_net_takes_its_norm_layers_from_the_registry(monkeypatch):
    """A layer built by the registry is the one each net holds: swap an entry, and every net changes."""
    monkeypatch.setitem(NORMS, "my_bn", Norm("MyBN2d", ("#000000", "-"), lambda site: nn.Dropout(0.0)))
    nets = [TanhMLP("my_bn"), SigmoidMLP("my_bn"), DeepMLP("my_bn", depth=2, width=4), ConvNet("my_bn")]
    for net in nets:
        assert any(isinstance(m, nn.Dropout) for m in net.modules()), type(net).__name__
    assert MLP_MODELS["my_bn"].norm == "my_bn"


def test_adding_a_norm_to_the_conv_net_is_one_entry(monkeypatch, tmp_path):
    """A toy norm (instance norm: each channel of each sample on its own, as GroupNorm with one group a
    channel) in the registry alone: the conv experiment trains it beside MyBN2d, checks its results,
    draws it in its colour and names it by its label."""
    toy = Norm("InstanceNorm (toy)", ("#000000", ":"),
               lambda site: nn.GroupNorm(site.features, site.features, dtype=site.dtype))
    monkeypatch.setitem(NORMS, "instance_norm", toy)
    x_train, y_train, x_test, y_test = digits_split(0)
    small = (x_train[:40].double(), y_train[:40], x_test[:20].double(), y_test[:20])
    monkeypatch.setattr(conv.training, "digits_standardised", lambda dtype: small)
    config = conv.ConvSettings(norms=["my_bn", "instance_norm"], batch_sizes=[2, 8], base_batch=8, ghost_batch=2,
                               ghost_at=[8], lr_factors=[1.0, 10.0], seeds=[0, 1], epochs=1, dtype="float64", workers=1,
                               long_epochs=[], held_factors=[], noniid_classes=0)
    results = {"experiment": "conv", **conv.run(config, log=lambda _: None)}
    conv.check_format(results)
    assert {r["model"] for r in results["runs"]} == {"my_bn", "instance_norm", "ghost", "plain"}
    assert "| InstanceNorm (toy) |" in conv.batch_table(results).replace(" | ", " |\n| ")
    assert COLOURS["instance_norm"] == ("#000000", ":")
    rows = conv.verdicts(results)  # no GroupNorm and no Batch Renorm here: their rows are left out
    assert [row.explanation.split(" (")[0] for row in rows] == ["Ghost batches regularise",
                                                                "Batch norm allows larger learning rates on a conv net"]
    conv.plot_conv(results, tmp_path / "conv.png")
    assert (tmp_path / "conv.png").stat().st_size > 10_000
