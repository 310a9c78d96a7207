"""MyBN where PyTorch's tools and the ecosystem's look for batch norm: by type (``_BatchNorm``,
``nn.BatchNorm2d``), through PyTorch's own functions and Lightning's, called here as a user calls them.

timm's ``freeze_batch_norm_2d`` is not run: timm needs torchvision, whose wheels on PyPI are built
against the CUDA build of torch and do not load against the CPU build these machines install
("operator torchvision::nms does not exist"). What it checks, ``isinstance(m, (nn.BatchNorm2d,
nn.SyncBatchNorm))``, is tested instead."""

import pytest
import torch
from pytorch_lightning.callbacks import BaseFinetuning
from pytorch_lightning.plugins import TorchSyncBatchNorm
from torch import nn
from torch.ao.quantization import fuse_modules, fuse_modules_qat
from torch.func import replace_all_batch_norm_modules_
from torch.nn.modules.batchnorm import _BatchNorm

import my_bn
from my_bn import (
    MyBatchRenorm,
    MyBatchRenorm2d,
    MyBN,
    MyBN2d,
    MyBN3d,
    MyGhostBN,
    MyGhostBN2d,
    MySyncBN,
    convert_to_mybn,
)

LAYERS = {  # each layer, and the PyTorch type it is also an instance of
    MyBN: None, MyBN2d: nn.BatchNorm2d, MyBN3d: nn.BatchNorm3d, MySyncBN: nn.SyncBatchNorm,
    MyBatchRenorm: None, MyBatchRenorm2d: nn.BatchNorm2d, MyGhostBN: None, MyGhostBN2d: nn.BatchNorm2d,
}


def make(layer_type, channels=4):
    return layer_type(channels, ghost_batch_size=2) if issubclass(layer_type, MyGhostBN) else layer_type(channels)


@pytest.mark.parametrize("layer_type", LAYERS)
def test_found_by_type_and_still_mybn(layer_type):
    layer = make(layer_type)
    assert isinstance(layer, _BatchNorm) and isinstance(layer, MyBN)
    if LAYERS[layer_type] is not None:
        assert isinstance(layer, LAYERS[layer_type])  # timm's freeze_batch_norm_2d looks for these
    assert type(layer).forward is not _BatchNorm.forward  # MyBN's methods come first
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [name for name, _ in layer.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]


def test_convert_sync_batchnorm_synchronises_them():
    """PyTorch's converter replaces every _BatchNorm, MyBN's too, by nn.SyncBatchNorm holding its tensors
    (so does Lightning's sync_batchnorm=True); convert_to_mybn(model, sync=True) keeps MyBN instead."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyBN2d(4), nn.Sequential(MyBN(4, momentum=0.3)))
    tensors = [id(t) for t in (*model.parameters(), *model.buffers())]
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(synced[1]) is nn.SyncBatchNorm and type(synced[2][0]) is nn.SyncBatchNorm
    assert synced[2][0].momentum == 0.3
    assert [id(t) for t in (*synced.parameters(), *synced.buffers())] == tensors
    lightning = TorchSyncBatchNorm().apply(nn.Sequential(MyBN2d(4)))
    assert type(lightning[0]) is nn.SyncBatchNorm


def test_sync_is_refused_by_the_variants_before_anything_changes():
    model = nn.Sequential(nn.BatchNorm1d(3), MyGhostBN(3, ghost_batch_size=2), MyBatchRenorm(3), MyBN(3))
    with pytest.raises(ValueError, match=r"Sequential\.1 \(MyGhostBN\), Sequential\.2 \(MyBatchRenorm\) cannot"):
        convert_to_mybn(model, sync=True)
    assert type(model[0]) is nn.BatchNorm1d and not model[3].sync  # nothing converted, nothing set
    with pytest.raises(TypeError):
        MyBatchRenorm(3, sync=True)


FUSIONS = [  # (conv, norm, input shape): each with a ReLU after it too, but Linear (PyTorch fuses Linear → BN only)
    (nn.Conv2d(3, 4, 3), MyBN2d, (5, 3, 6, 6)), (nn.Conv1d(3, 4, 3), MyBN, (5, 3, 6)),
    (nn.Conv3d(3, 4, 3), MyBN3d, (5, 3, 4, 4, 4)), (nn.Conv2d(3, 4, 3), MyBatchRenorm2d, (5, 3, 6, 6)),
    (nn.Conv2d(3, 4, 3), MyGhostBN2d, (5, 3, 6, 6)),
]


@pytest.mark.parametrize(("conv", "norm", "shape", "relu"), [
    *((*case, relu) for case in FUSIONS for relu in (False, True)), (nn.Linear(3, 4), MyBN, (5, 3), False),
])
def test_fuse_modules_folds_them_in_eval(conv, norm, shape, relu):
    """torch.ao.quantization.fuse_modules, with FUSER_METHODS as its documented additional mapping: the fused
    module computes what conv → norm (→ ReLU) computed in eval mode."""
    torch.manual_seed(8)
    model = nn.Sequential(conv, make(norm), *([nn.ReLU()] if relu else []))
    for _ in range(3):
        model(torch.randn(shape))  # running estimates that are not 0 and 1
    model.eval()
    x = torch.randn(shape)
    expected = model(x)
    names = [["0", "1", "2"] if relu else ["0", "1"]]
    with pytest.raises(AssertionError, match="did not find fuser method"):  # by default: exact types only
        fuse_modules(model, names)
    fused = fuse_modules(model, names, fuse_custom_config_dict={"additional_fuser_method_mapping": my_bn.FUSER_METHODS})
    assert isinstance(fused[1], nn.Identity)
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_fuse_modules_qat_keeps_mybn_and_refuses_the_variants_in_training():
    mapping = {"additional_fuser_method_mapping": my_bn.FUSER_METHODS}
    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyBN2d(4)).train()
    norm = model[1]
    fused = fuse_modules_qat(model, [["0", "1"]], inplace=True, fuse_custom_config_dict=mapping)
    assert type(fused[0]).__name__ == "ConvBn2d" and fused[0][1].running_var is norm.running_var
    variant = nn.Sequential(nn.Conv2d(3, 4, 3), MyBatchRenorm2d(4), nn.ReLU()).train()
    with pytest.raises(ValueError, match="MyBatchRenorm2d can be fused in eval mode only"):
        fuse_modules_qat(variant, [["0", "1"]], fuse_custom_config_dict=mapping)
    with pytest.raises(ValueError, match="MyBatchRenorm2d can be fused in eval mode only"):  # as BN + ReLU, training
        fuse_modules(variant, [["1", "2"]], fuse_custom_config_dict=mapping)


def test_pytorch_counterpart_computes_the_same_in_eval():
    torch.manual_seed(9)
    layer = MyBatchRenorm2d(3, momentum=0.2, eps=1e-3)
    layer(torch.randn(6, 3, 4, 4) * 2 + 1)
    counterpart = my_bn.pytorch_counterpart(layer.eval())
    assert type(counterpart) is nn.BatchNorm2d and counterpart.running_var is layer.running_var
    assert counterpart.eps == 1e-3 and counterpart.momentum == 0.2 and not counterpart.training
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(counterpart(x), layer(x))


def test_lightning_freezes_them():
    """Lightning's BaseFinetuning.freeze finds batch norm by _BatchNorm: it stops the gradients and the
    running estimates, and MyBN then normalises with batch statistics, as nn does."""
    torch.manual_seed(10)
    pair = [nn.Sequential(nn.Conv2d(3, 4, 3), norm(4)) for norm in (nn.BatchNorm2d, MyBN2d)]
    pair[1].load_state_dict(pair[0].state_dict())
    x = torch.randn(5, 3, 6, 6)
    for model in pair:
        BaseFinetuning.freeze(model, train_bn=False)
        assert not any(p.requires_grad for p in model.parameters()) and not model[1].track_running_stats
    torch.testing.assert_close(pair[1](x), pair[0](x))
    assert torch.equal(pair[1][1].num_batches_tracked, torch.tensor(0))


def test_torch_func_replace_all_batch_norm_modules():
    """torch.func's helper finds them by _BatchNorm and drops their running estimates: batch statistics, as nn."""
    torch.manual_seed(11)
    pair = [nn.Sequential(nn.Linear(3, 4), norm(4)) for norm in (nn.BatchNorm1d, MyBN)]
    pair[1].load_state_dict(pair[0].state_dict())
    x = torch.randn(6, 3)
    for model in pair:
        replace_all_batch_norm_modules_(model)
        assert model[1].running_mean is None
    torch.testing.assert_close(pair[1].eval()(x), pair[0].eval()(x))
