"""MyBN(sync=True) over two processes (gloo, loopback) against single-process MyBN on the whole batch."""

import datetime
import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from torch import nn

from helpers import ROOT
from my_bn import MyBN, MySyncBN, convert_to_mybn

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, fn, args) -> None:
    """One process: join the group, run ``fn``, and leave the group whatever happens."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
        dist.barrier()  # nobody leaves, taking the rendezvous store along, while another still needs it
    except BaseException:
        Path(out, f"error{rank}").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()
        Path(out, f"destroyed{rank}").write_text(str(not dist.is_initialized()))


def run_two(tmp_path, fn, *args) -> None:
    """Run ``fn(rank, *args)`` in two processes forked from this one; fail if either fails."""
    tmp.start_processes(_worker, args=(free_port(), str(tmp_path), fn, args), nprocs=WORLD, start_method="fork")
    for rank in range(WORLD):
        assert Path(tmp_path, f"destroyed{rank}").read_text() == "True"


def _parity(rank: int, sizes: tuple[int, int], tail: tuple[int, ...], momentum) -> None:
    gen = torch.Generator().manual_seed(0)
    c = 3
    bounds = [0, sizes[0], sizes[0] + sizes[1]]
    ref = MyBN(c, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        ref.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    mine = MyBN(c, momentum=momentum, dtype=torch.float64, sync=True)
    mine.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(bounds[-1], c, *tail, generator=gen, dtype=torch.float64) * 2 + 1
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x_all, x_mine = x.clone().requires_grad_(), x[bounds[rank] : bounds[rank + 1]].clone().requires_grad_()
        y_all, y_mine = ref(x_all), mine(x_mine)
        y_all.backward(dy)
        y_mine.backward(dy[bounds[rank] : bounds[rank + 1]])
        share = slice(bounds[rank], bounds[rank + 1])
        torch.testing.assert_close(y_mine, y_all[share])
        torch.testing.assert_close(x_mine.grad, x_all.grad[share])
        for p_all, p_mine in ((ref.weight, mine.weight), (ref.bias, mine.bias)):
            total = p_mine.grad.clone()
            dist.all_reduce(total)  # each process holds its share of the parameter gradients
            torch.testing.assert_close(total, p_all.grad)
            p_all.grad = p_mine.grad = None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(mine, name), getattr(ref, name))


@pytest.mark.parametrize("sizes", [(8, 8), (5, 11), (1, 7), (0, 6)], ids=["equal", "unequal", "one", "empty"])
@pytest.mark.parametrize("tail", [(), (4,)], ids=["NC", "NCL"])
def test_two_processes_match_one_on_the_whole_batch(tmp_path, sizes, tail):
    run_two(tmp_path, _parity, sizes, tail, 0.1 if sizes != (5, 11) else None)


def _converted_sync_batchnorm(rank: int) -> None:
    """nn.SyncBatchNorm, which refuses CPU tensors, converted: 4D and 5D shares normalised with the
    statistics of the whole batch, as nn.BatchNorm2d/3d normalise it in one process."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.SyncBatchNorm(3, momentum=None)).double()
    with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
        model(torch.randn(3, 3, 4, 5, dtype=torch.float64))
    convert_to_mybn(model)
    assert type(model[0]) is MySyncBN
    share = slice(3 * rank, 3 * rank + 3)
    for whole, tail in ((nn.BatchNorm2d, (4, 5)), (nn.BatchNorm3d, (2, 3, 2))):
        ref = whole(3, momentum=None, dtype=torch.float64)
        x = torch.randn(6, 3, *tail, generator=gen, dtype=torch.float64) * 2 + 1
        model[0].reset_running_stats()
        torch.testing.assert_close(model(x[share]), ref(x)[share])
        torch.testing.assert_close(model[0].running_var, ref.running_var)


def test_converted_sync_batchnorm_runs_on_the_cpu(tmp_path):
    run_two(tmp_path, _converted_sync_batchnorm)


def _eval_sends_nothing(rank: int) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("eval mode communicated")

    bn = MyBN(3, sync=True).eval()
    dist.all_gather, dist.all_reduce = refuse, refuse
    bn(torch.randn(4, 3))
    MyBN(3, sync=True, track_running_stats=False).eval()(torch.randn(4, 3))  # batch statistics, still local
    MyBN(3)(torch.randn(4, 3))  # sync=False in training: local too


def test_eval_mode_sends_nothing(tmp_path):
    run_two(tmp_path, _eval_sends_nothing)


def _fails(rank: int) -> None:
    raise AssertionError(f"rank {rank} fails on purpose")


def test_group_is_destroyed_when_a_process_fails(tmp_path):
    with pytest.raises(tmp.ProcessRaisedException, match="fails on purpose"):
        tmp.start_processes(_worker, args=(free_port(), str(tmp_path), _fails, ()), nprocs=WORLD, start_method="fork")
    for rank in range(WORLD):
        assert "fails on purpose" in Path(tmp_path, f"error{rank}").read_text()
        assert Path(tmp_path, f"destroyed{rank}").read_text() == "True"


def test_sync_without_a_group_is_plain_mybn():
    x = torch.randn(6, 3)
    torch.testing.assert_close(MyBN(3, sync=True)(x), MyBN(3)(x))


def test_convert_to_mybn_makes_synchronised_layers():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Sequential(MyBN(3)))
    group = object()  # any group object is passed through unchanged
    convert_to_mybn(model, sync=True, process_group=group)
    layers = [m for m in model.modules() if isinstance(m, MyBN)]
    assert len(layers) == 2 and all(m.sync and m.process_group is group for m in layers)


def test_train_py_under_torchrun(tmp_path):
    """The documented second launcher: torchrun starts the processes, train.py joins their group."""
    root = ROOT
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
    ]
    flags = ["--ranges", "5", "--seeds", "0", "--epochs", "1", "--models", "my_bn", "--out", str(tmp_path)]
    cmd = [*launcher, "train.py", *flags]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["environment"]["processes"] == 2 and results["config"]["nproc"] == 2
    assert done.stdout.count("wrote") == 1  # the first process alone writes
