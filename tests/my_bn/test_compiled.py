"""MyBN under torch.compile and TorchScript: one graph with the running statistics, and clear words where
TorchScript cannot go (tests/my_bn/test_func.py runs it through torch.export and torch.func)."""

import pytest
import torch
from torch import nn

from my_bn import MyBN


def test_momentum_none_compiles_once():
    """The cumulative average (momentum=None) takes its factor as a tensor: one graph for every step."""
    graphs = []

    def counting_backend(gm, example_inputs):  # runs the captured graph as it is: no C++ compiler needed
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    mine = nn.Sequential(nn.Linear(4, 4), MyBN(4, momentum=None)).double()
    ref = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None)).double()
    ref.load_state_dict(mine.state_dict())
    compiled = torch.compile(mine, backend=counting_backend)
    for _ in range(8):
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        compiled(x).sum().backward()
        ref(x).sum().backward()
    assert len(graphs) == 1
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(mine[1], name), getattr(ref[1], name), rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_jit_script_says_what_works_instead():
    for _ in range(2):  # the same one line every time (TorchScript's own second error was another)
        with pytest.raises(RuntimeError) as exc:
            torch.jit.script(MyBN(4))
        message = str(exc.value)
        assert "\n" not in message and "MyBN is not scriptable" in message
        assert all(tool in message for tool in ("torch.compile", "torch.export", "torch.jit.trace"))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit:DeprecationWarning")
def test_jit_trace_matches_pytorch():
    x = torch.randn(16, 4, dtype=torch.float64)
    for training in (True, False):
        ref = nn.BatchNorm1d(4, dtype=torch.float64).train(training)
        mine = MyBN(4, dtype=torch.float64).train(training)
        traced = torch.jit.trace(mine, x, check_trace=False)
        torch.testing.assert_close(traced(x + 1), ref(x + 1))
