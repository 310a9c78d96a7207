"""bench.py's second table: train.py's training loop against the original write-up's DataLoader loop,
the main experiment with each MyBN backend, the C++ backend's first build, and the README's main
command end to end (``train_loop_rows``, timed in seconds; ``format_train_table`` prints them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from lab import loop, regression
from lab.data import make_dataset
from lab.nets import MLP_MODELS as NETS
from lab.nets import TanhMLP
from lab.pages import table
from lab.regression import Regression
from my_bn import cpp as my_bn_cpp


def dataloader_run(model: str, r: float, seed: int, config: Regression, backend: str = "python") -> None:
    """The original write-up's loop: a DataLoader with two worker processes, same work as train_one."""
    data = make_dataset(r, seed)
    net = TanhMLP(model, seed, bn_momentum=config.bn_momentum, mybn_backend=backend)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_train, data.y_train),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(seed),
    )
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    scaling = regression.Scaling()
    test_mse = [regression.evaluate(net, data.x_test, data.y_test, scaling)[0].item()]
    for _ in range(config.epochs):
        net.train()
        for xb, yb in loader:
            loss = nn.functional.mse_loss(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        test_mse.append(regression.evaluate(net, data.x_test, data.y_test, scaling)[0].item())


def train_loop_rows(repeats: int = 3, cpp: bool = True) -> list[dict]:
    """Median seconds of one default training run (x in (-5, 5)) per net, both ways, in this process
    (diagnostics off: both loops do the same work), the MyBN net also with ``backend="cpp"`` (with
    ``cpp``), and the README's main command end to end, less the install: every experiment
    (``train.py all``), then every figure and table (``compare.py``)."""
    config = Regression()
    torch.set_num_threads(config.threads)
    data = make_dataset(5.0, 0)
    order = loop.BatchOrder(len(data.x_train), config.batch_size, config.epochs, 0)

    def median_seconds(fn) -> float:
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        return sorted(seconds)[len(seconds) // 2]

    # Every train.py run first: a DataLoader's worker processes are still exiting for a while after
    # its loop ends, and would slow whatever is timed next on a 2-core machine.
    nets = {model: (model, "python") for model in config.models}
    if cpp and my_bn_cpp.available():
        nets["my_bn_cpp"] = ("my_bn", "cpp")
    ours = {
        name: median_seconds(
            lambda m=model, b=backend: regression.train_one(
                TanhMLP(m, 0, bn_momentum=config.bn_momentum, mybn_backend=b), data, order, config.lr
            )
        )
        for name, (model, backend) in nets.items()
    }
    loader = {name: median_seconds(lambda m=model, b=backend: dataloader_run(m, 5.0, 0, config, b))
              for name, (model, backend) in nets.items()}
    rows = [{"what": name, "train_py_s": ours[name], "dataloader_s": loader[name]} for name in nets]
    if "my_bn_cpp" in nets:  # what the C++ backend would cost and save the main command
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCH_EXTENSIONS_DIR": cache}
            start = time.perf_counter()
            cmd = [sys.executable, "-c", "from my_bn import cpp; assert cpp.available()"]
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            rows.append({"what": "build", "wall_s": time.perf_counter() - start})
        for backend in ("python", "cpp"):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                cmd = [sys.executable, "train.py", "main", "--mybn-backend", backend, "--out", tmp]
                subprocess.run(cmd, check=True, capture_output=True)
                rows.append({"what": "main", "backend": backend, "wall_s": time.perf_counter() - start})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "train.py", "all", "--out", tmp], check=True, capture_output=True)
        cmd = [sys.executable, "compare.py", "--results", tmp, "--pictures", f"{tmp}/pic", "--readme", ""]
        subprocess.run(cmd, check=True, capture_output=True)
        rows.append({"what": "experiment", "command": "all", "wall_s": time.perf_counter() - start})
    return rows


def format_train_table(rows: list[dict]) -> str:
    cells = []
    for row in rows:
        if "train_py_s" in row:
            ours, theirs = row["train_py_s"], row["dataloader_s"]
            label = NETS["my_bn"].label + ", C++ backend" if row["what"] == "my_bn_cpp" else NETS[row["what"]].label
            cells.append([label, f"{ours:.3f}", f"{theirs:.3f}", f"{theirs / ours:.1f}×"])
    lines = [table(("one training run, 10 epochs, x in (-5, 5)", "train.py loop, s",
                    "DataLoader(num_workers=2) loop, s", "speed-up"), cells)]
    main = {row["backend"]: row["wall_s"] for row in rows if row["what"] == "main"}
    build = [row["wall_s"] for row in rows if row["what"] == "build"]
    if main:
        lines += ["", f"`python train.py main` (2 ranges × 3 nets × 5 seeds × 10 epochs): {main['python']:.1f} s wall "
                  f"with MyBN's Python backend, {main['cpp']:.1f} s with `--mybn-backend cpp` (already built). "
                  f"Building the C++ backend the first time: {build[0]:.1f} s."]
    end_to_end = next(row for row in rows if row["what"] == "experiment")
    if end_to_end.get("command") == "all":
        what = "The README's main command without the install, `python train.py all` then `compare.py`"
    else:  # a run of an earlier bench.py, which timed the main experiment alone
        what = "`python train.py` (2 ranges × 3 nets × 5 seeds × 10 epochs), then `compare.py` for its figures"
    return "\n".join(lines) + f"\n\n{what}: {end_to_end['wall_s']:.1f} s wall."
