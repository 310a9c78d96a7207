"""What the test files share that is not a fixture (those are conftest.py's), imported by name
(``from helpers import make_pair, step``): the repository's paths and pages; the helpers that hold MyBN to
PyTorch's layer (``make_pair``, ``step``, ``check_parity``, ...); a small regression configuration and a
net caught mid-step (``SMALL``, ``step_state``); and the link check of the Markdown pages
(``broken_links``)."""

import re
from pathlib import Path

import torch
from torch import nn

from experiments import EXPERIMENTS
from lab.data import make_dataset
from lab.nets import TanhMLP
from lab.regression import Regression
from my_bn import MyBN2d, MyBN3d, MySyncBN

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--ranges", "1", "5", "--seeds", "0", "1", "--epochs", "2"]  # every experiment, as small as it runs
TINY_ALL = [*TINY, "--long-epochs", "--depths", "2", "--init-depths", "2", "3", "--rates", "0.1", "1"]  # ... and, for
# `train.py all`, no longer budgets (conv, only_bn, residual), and residual's nets shallow at two rates
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.stem: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}  # the pages by name
VERDICTS = DOCS["verdicts"]  # the verdicts' page: every row whole, what the verdicts say and how they are decided


def round_trip(results: dict, tmp_path: Path) -> dict:
    """``results`` saved as train.py saves them into ``tmp_path`` and loaded back as compare.py loads them
    (its experiment's format, name and settings), its record's own check passed."""
    from lab.results import load_results, save_results

    record = EXPERIMENTS[results["experiment"]]
    save_results(results, tmp_path)
    loaded = load_results(tmp_path, record.results_format, experiment=record.name, settings=record.settings)
    record.check(loaded)
    return loaded


def committed(name: str) -> Path:
    """Experiment ``name``'s committed results file, where its record says it is."""
    return EXPERIMENTS[name].results_path(ROOT / "results")


def verdict(row: str, part: str = "") -> str:
    """The committed answer of one part of a verdict row (results/verdicts.json, as compare.py wrote it;
    Holm's correction over the row's parts applied): the row by the start of its explanation."""
    from experiments import read_verdicts

    found = [p["answer"] for p in read_verdicts(ROOT / "results") if p["row"].startswith(row) and p["part"] == part]
    if len(found) != 1:
        raise KeyError(f"{len(found)} parts {part!r} in the rows starting {row!r}")
    return found[0]


def make_pair(ref_cls, my_cls, num_features, dtype=torch.float64, seed=0, device="cpu", backend=None, **kwargs):
    """A PyTorch layer with random gamma/beta, and a MyBN (of ``backend``) loaded from its state dict."""
    ref = ref_cls(num_features, dtype=dtype, device=device, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    mine = my_cls(num_features, dtype=dtype, device=device, backend=backend, **kwargs)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def step(layer, x, dy):
    """One forward and backward: the output and the gradients of input, weight and bias (None where absent)."""
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    grads = [x.grad] + [None if p is None else p.grad for p in (layer.weight, layer.bias)]
    layer.zero_grad(set_to_none=True)
    return y, grads


SMALL = Regression(ranges=[5.0], seeds=[0], epochs=2, diagnostics=False)


def step_state(model: str = "my_bn", optimizer: str = "adam", lr_: float = 0.02, dtype=torch.float32):
    """A net with this step's gradient on a batch, and its optimiser after one earlier step."""
    net = TanhMLP(model, 0, dtype=dtype).train()
    data = make_dataset(5.0, 0, dtype=dtype)
    x, y = data.x_train[:64], data.y_train[:64]
    opt = torch.optim.Adam(net.parameters(), lr=lr_) if optimizer == "adam" else torch.optim.SGD(net.parameters(), lr_)
    nn.functional.mse_loss(net(x), y).backward()
    opt.step()
    opt.zero_grad()
    nn.functional.mse_loss(net(x), y).backward()
    return net, opt, x, y


def snapshot(net, opt) -> list[torch.Tensor]:
    state = [v for d in opt.state.values() for v in d.values() if isinstance(v, torch.Tensor)]
    return [t.clone() for t in (*net.parameters(), *(p.grad for p in net.parameters()), *net.buffers(), *state)]


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """The links and images of Markdown ``page`` that lead nowhere: a path that does not exist relative
    to the page's folder, or an #anchor that is no heading of the page it points into."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    return broken


def cells(line: str) -> int:
    """How many cells a Markdown table line holds, as GitHub splits it: at each ``|`` not escaped, the
    outer ones aside."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def broken_tables(page: Path) -> list[str]:
    """The lines of Markdown ``page``'s tables (outside code blocks) whose cell count differs from their
    table's header (GitHub drops the extra cells, or leaves the missing ones empty, without a word)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = cells(line)
        elif cells(line) != header:
            broken.append(line)
    return broken


# MyBN against PyTorch's layers (tests/my_bn/test_layer.py, test_layer_api.py)

CONFIGS = {
    "default": {},
    "no_affine": {"affine": False},
    "no_bias": {"bias": False},
    "no_tracking": {"track_running_stats": False},
}


def assert_same_buffers(ref, mine, **tol):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        r, m = getattr(ref, name), getattr(mine, name)
        if r is None:
            assert m is None, name
        else:
            assert m.dtype == r.dtype, name
            torch.testing.assert_close(m, r, **tol, msg=lambda s, name=name: f"{name}: {s}")


def check_parity(ref, mine, shape, dtype, steps=4, seed=0, atol=None, rtol=None):
    """Several training steps, then eval: outputs, three gradients and three buffers agree."""
    gen = torch.Generator().manual_seed(seed)
    device = mine.running_mean.device if mine.running_mean is not None else mine.weight.device
    tol = {} if atol is None else {"atol": atol, "rtol": rtol}
    for mode in ["train"] * steps + ["eval"] * 2:
        ref.train(mode == "train")
        mine.train(mode == "train")
        # shifted, scaled batches so that the running statistics have something to track
        x = (torch.randn(shape, generator=gen, dtype=dtype) * 3 + 2).to(device)
        dy = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        y_ref, g_ref = step(ref, x, dy)
        y_my, g_my = step(mine, x, dy)
        assert y_my.dtype == y_ref.dtype
        torch.testing.assert_close(y_my, y_ref, **tol, msg=lambda s, mode=mode: f"{mode} output: {s}")
        for name, a, b in zip(("input", "weight", "bias"), g_my, g_ref, strict=True):
            if b is None:
                assert a is None, name
            else:
                torch.testing.assert_close(a, b, **tol, msg=lambda s, mode=mode, name=name: f"{mode} d{name}: {s}")
        assert_same_buffers(ref, mine, **tol)


OTHER_RANKS = {
    "2d": (nn.BatchNorm2d, MyBN2d, (4, 3, 5, 6)),
    "3d": (nn.BatchNorm3d, MyBN3d, (2, 3, 3, 4, 5)),
    **{f"sync-{len(shape)}d": (nn.SyncBatchNorm, MySyncBN, shape) for shape in [(16, 3), (4, 3, 5), (2, 3, 4, 2, 3)]},
}
