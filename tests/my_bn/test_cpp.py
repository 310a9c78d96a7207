"""MyBN(backend="cpp"): the C++ loops of my_bn/cpp.cpp against nn.BatchNorm1d/2d, where they run, and
what happens where they do not (tests/my_bn/test_layer.py runs its whole parity suite on them too)."""

import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from helpers import ROOT, make_pair, step
from lab import loop, regression
from lab.data import make_dataset
from lab.nets import TanhMLP
from my_bn import MyBN, MyBN2d, MyBN3d
from my_bn import cpp as my_bn_cpp

pytestmark = pytest.mark.skipif(my_bn_cpp.compiler() is None, reason="no C++ compiler here")


def test_it_builds_wherever_there_is_a_compiler():
    """A compiler but no C++ backend is a failure, not a reason to test the Python backend twice."""
    assert my_bn_cpp.available()


CPP_NODE = "torch::autograd::CppNode<my_bn_cpp::BatchNormCpp>"  # the C++ backend's autograd node


def ran_in_cpp(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and y.grad_fn.name() == CPP_NODE


# Shapes that cut the work every way the kernels do: several blocks of rows, more blocks than row
# groups, few rows with long runs (split by channel ranges), and a channel count that is not a
# multiple of the vector width.
LARGE = {
    "NC many blocks": (nn.BatchNorm1d, MyBN, (70_000, 3)),
    "NC wide": (nn.BatchNorm1d, MyBN, (300, 257)),
    "NCL long runs": (nn.BatchNorm1d, MyBN, (3, 5, 40_000)),
    "NCL": (nn.BatchNorm1d, MyBN, (64, 17, 100)),
    "NCHW": (nn.BatchNorm2d, MyBN2d, (8, 6, 33, 35)),
}


@pytest.mark.parametrize("case", LARGE)
def test_large_inputs_match_pytorch(case):
    ref_cls, my_cls, shape = LARGE[case]
    ref, mine = make_pair(ref_cls, my_cls, shape[1], momentum=0.3, backend="cpp")
    gen = torch.Generator().manual_seed(1)
    for train in (True, True, False):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2
        dy = torch.randn(shape, generator=gen, dtype=torch.float64)
        (y_ref, g_ref), (y_my, g_my) = (step(layer.train(train), x, dy) for layer in (ref, mine))
        assert ran_in_cpp(y_my) == train
        torch.testing.assert_close(y_my, y_ref)
        for ours, theirs in zip(g_my, g_ref, strict=True):
            torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(mine.running_mean, ref.running_mean)
        torch.testing.assert_close(mine.running_var, ref.running_var)


@pytest.mark.parametrize("shape", [(4111, 1023), (5, 7, 120_001)], ids=["NC", "NCL"])
def test_outputs_written_past_the_cache(shape):
    """float32 outputs from 16 MiB take non-temporal stores (on AVX-512 machines), rows and runs that
    do not start on a cache line included: the same numbers as PyTorch, in float32 tolerance."""
    assert math.prod(shape) * 4 >= 1 << 24
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=gen) * 3 + 2
    dy = torch.randn(shape, generator=gen)
    ref, mine = nn.BatchNorm1d(shape[1]), MyBN(shape[1], backend="cpp")
    with torch.no_grad():
        ref.weight.normal_(generator=gen)
        mine.weight.copy_(ref.weight)
    (y_ref, g_ref), (y_my, g_my) = (step(layer, x, dy) for layer in (ref, mine))
    assert ran_in_cpp(y_my)
    torch.testing.assert_close(y_my, y_ref, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(g_my, g_ref, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)  # sums of millions of float32 terms


LAYOUTS = {
    "transposed NC": lambda t: t.t().contiguous().t(),
    "channels last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "channels last 3d": lambda t: t.contiguous(memory_format=torch.channels_last_3d),
    "every other column": lambda t: torch.cat([t, t], dim=1)[:, ::2],  # not dense: copied first
}
SHAPES = {"transposed NC": (500, 7), "channels last": (6, 5, 9, 11), "channels last 3d": (3, 4, 5, 6, 7),
          "every other column": (64, 6, 10)}
LAYERS = {2: (nn.BatchNorm1d, MyBN), 3: (nn.BatchNorm1d, MyBN), 4: (nn.BatchNorm2d, MyBN2d),
          5: (nn.BatchNorm3d, MyBN3d)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_layouts(layout):
    """Input and output gradient in other memory layouts: the same numbers, and y laid out as x."""
    shape = SHAPES[layout]
    ref, mine = make_pair(*LAYERS[len(shape)], shape[1], backend="cpp")
    gen = torch.Generator().manual_seed(2)
    x = LAYOUTS[layout](torch.randn(shape, generator=gen, dtype=torch.float64) * 2 - 1)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64)  # contiguous: not laid out as x
    assert not x.is_contiguous()
    (y_ref, g_ref), (y_my, g_my) = (step(layer, x, dy) for layer in (ref, mine))
    assert ran_in_cpp(y_my)
    if layout != "every other column":
        assert y_my.stride() == x.stride()
    torch.testing.assert_close(y_my, y_ref)
    for ours, theirs in zip(g_my, g_ref, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_reruns_are_bit_identical_whatever_the_thread_count():
    """The sums are cut by shape alone and combined in order: 1 and 2 threads give the same bits."""
    gen = torch.Generator().manual_seed(3)
    results = []
    for shape in [(50_000, 24), (16, 8, 3000)]:
        x = torch.randn(shape, generator=gen) * 5 + 3
        dy = torch.randn(shape, generator=gen)
        for threads in (1, 2, 2):
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                layer = MyBN(shape[1], backend="cpp")
                y, grads = step(layer, x, dy)
            finally:
                torch.set_num_threads(before)
            results.append([y.detach(), *grads, layer.running_mean, layer.running_var])
        for other in results[1:]:
            for a, b in zip(results[0], other, strict=True):
                assert torch.equal(a, b)
        results.clear()


def test_large_mean_small_std_float32():
    """Mean 1e4, std 1e-2: statistics and output as close to float64 as the Python backend's."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(4096, 4), (70_000, 4), (64, 4, 300)]:  # one block, many (of 8192 rows), runs of 300
        x = 1e4 + 1e-2 * torch.randn(shape, generator=gen)
        dy = torch.randn(shape, generator=gen)
        truth = nn.BatchNorm1d(4, dtype=torch.float64)
        y_true, g_true = step(truth, x.double(), dy.double())
        mine = MyBN(4, backend="cpp")
        y, grads = step(mine, x, dy)
        assert ran_in_cpp(y)
        torch.testing.assert_close(y.double(), y_true, atol=1e-5, rtol=0)
        torch.testing.assert_close(grads[0].double(), g_true[0], atol=1e-3, rtol=1e-4)  # dx is ~100 here
        torch.testing.assert_close(mine.running_var.double(), truth.running_var, atol=0, rtol=1e-5)


def test_where_the_python_backend_runs_instead():
    """Eval mode, double backward, torch.func, torch.compile and tracing leave the C++ loops, with the
    same numbers."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 5, backend="cpp")
    assert ran_in_cpp(mine(x))
    assert not ran_in_cpp(mine.eval()(x))
    mine.train()

    # double backward: C++ calls back into the reference, whose operations autograd records
    (gx_ref,) = torch.autograd.grad(ref(x).pow(3).sum(), x, create_graph=True)
    (gx_my,) = torch.autograd.grad(mine(x).pow(3).sum(), x, create_graph=True)
    torch.testing.assert_close(gx_my, gx_ref)
    torch.testing.assert_close(torch.autograd.grad(gx_my.sum(), x)[0], torch.autograd.grad(gx_ref.sum(), x)[0])

    stateless = [MyBN(5, dtype=torch.float64, track_running_stats=False, backend=b) for b in ("python", "cpp")]
    per_sample = [torch.func.vmap(layer)(x.detach().view(4, 8, 5)) for layer in stateless]
    torch.testing.assert_close(per_sample[1], per_sample[0])

    compiled = torch.compile(MyBN(5, dtype=torch.float64, backend="cpp"), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), MyBN(5, dtype=torch.float64)(x))


class Tagged(torch.Tensor):
    """A tensor subclass that only passes its operations on: the loops would drop the class."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def test_what_records_or_wraps_the_operations_runs_in_python():
    """make_fx (a dispatch mode), a function mode, a tensor subclass and a backward batched by vmap:
    the loops would read memory past what records or wraps it; the Python backend runs instead, or the
    reference's backward, with nn's numbers."""
    from torch.fx.experimental.proxy_tensor import make_fx

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    ref, mine = make_pair(nn.BatchNorm1d, MyBN, 5, backend="cpp")
    traced = make_fx(lambda t: mine(t))(x)  # records the operations: the Python backend's
    assert any("var_mean" in str(n.target) for n in traced.graph.nodes)
    torch.testing.assert_close(traced(x + 1), ref(x + 1))

    class Watching(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Watching():
        assert not ran_in_cpp(mine(x.requires_grad_()))
    tagged = mine(x.detach().as_subclass(Tagged))
    assert type(tagged) is Tagged
    torch.testing.assert_close(tagged.as_subclass(torch.Tensor), ref(x.detach()))

    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    ys = [layer(t) for layer, t in zip((ref, mine), xs, strict=True)]
    assert ran_in_cpp(ys[1])
    dys = torch.randn(3, *x.shape, generator=gen, dtype=torch.float64)
    grads = [torch.autograd.grad(y, t, dys, is_grads_batched=True)[0] for y, t in zip(ys, xs, strict=True)]
    torch.testing.assert_close(grads[1], grads[0])


def test_without_a_compiler_the_python_backend_runs(tmp_path):
    """No compiler ($CXX names none) and no built extension in the cache: one line, then the Python
    backend, and the same numbers."""
    script = (
        "import torch\n"
        "from torch import nn\n"
        "from my_bn import MyBN\n"
        "x = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)\n"
        "for _ in range(2):\n"
        "    mine = MyBN(3, dtype=torch.float64, backend='cpp')\n"
        "    y = mine(x)\n"
        "    assert 'BatchNormCpp' not in y.grad_fn.name()\n"
        "    torch.testing.assert_close(y, nn.BatchNorm1d(3, dtype=torch.float64)(x))\n"
        "print('ok')\n"
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "C++ backend is not available here" in lines[0] and "no C++ compiler" in lines[0]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.so"))


# ---------------------------------------------------------------------------------------------- the build
# A stand-in compiler answers cpp_extension's version questions as the real one does, and fails a
# compilation at once with a compiler's error line, or hangs in it while STAND_IN_HANGS is set.
STAND_IN = """#!/bin/sh
case "$1" in -dumpfullversion|-dumpversion|--version|-v) exec c++ "$@";; esac
[ -n "$STAND_IN_HANGS" ] && sleep 300
echo "/somewhere/cpp.cpp:7:3: error: this is a stand-in compiler" >&2
echo "compilation terminated." >&2
exit 1
"""
USE_CPP = "from my_bn import cpp; print(cpp.available())"


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The environment of a process that builds with the stand-in compiler into an empty cache; the
    test process gets it too, so that ``my_bn_cpp.build_directory()`` names that process's folder."""
    compiler = tmp_path / "stand-in-g++"
    compiler.write_text(STAND_IN)
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("STAND_IN_HANGS", raising=False)
    return dict(os.environ)


def run_python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_failed_build_says_that_it_builds_and_why_it_failed(stand_in):
    """Wherever the cache is ($TORCH_EXTENSIONS_DIR here), a build that really happens is announced;
    a failed one ends in one line with the compiler's first error, not its command line."""
    done = run_python(USE_CPP, stand_in)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    building, failed = done.stderr.strip().splitlines()
    assert building.startswith("MyBN: building the C++ backend once") and str(my_bn_cpp.build_directory()) in building
    assert failed == ("MyBN: the C++ backend is not available here (my_bn/cpp.cpp:7:3: error: this is a stand-in "
                      "compiler); using the Python backend")


def test_a_library_that_no_longer_loads_is_built_again(stand_in):
    """A build folder whose library was damaged or removed after its build: built again (here, by the
    stand-in, which fails), not given up on."""
    folder = my_bn_cpp.build_directory()
    folder.mkdir(parents=True)
    (folder / "built").write_text("")
    (folder / f"{folder.name}.so").write_bytes(b"not a library")
    done = run_python(USE_CPP, stand_in)
    assert done.stdout.strip() == "False", done.stderr
    building, failed = done.stderr.strip().splitlines()
    assert building.startswith("MyBN: building the C++ backend once") and "stand-in compiler" in failed
    assert not (folder / "built").exists()


def test_the_failure_line_is_the_compilers_first_error():
    ninja_output = (
        "Error building extension 'my_bn_cpp_0123': [1/2] c++ -MMD -MF my_bn_cpp.o.d -DTORCH_EXTENSION_NAME=x "
        "-isystem /error/include -c /tmp/test_error0/cpp.cpp -o my_bn_cpp.o\n"
        "FAILED: my_bn_cpp.o\nc++ -MMD -c /tmp/test_error0/cpp.cpp -o my_bn_cpp.o\n"
        "/tmp/test_error0/cpp.cpp: In function 'void f()':\n"
        "/tmp/test_error0/cpp.cpp:12:5: error: 'y' was not declared in this scope\n"
        "/tmp/test_error0/cpp.cpp:13:5: error: another\nninja: build stopped: subcommand failed.\n"
    )
    assert my_bn_cpp.build_error(ninja_output) == "my_bn/cpp.cpp:12:5: error: 'y' was not declared in this scope"
    linker = "Error building extension 'x': [2/2] c++ a.o -o x.so\nFAILED: x.so\n/usr/bin/ld: cannot find -lfoo\n"
    assert my_bn_cpp.build_error(linker + "collect2: error: ld returned 1 exit status\n") == (
        "collect2: error: ld returned 1 exit status"
    )


def test_a_build_killed_midway_leaves_nothing_that_waits(stand_in):
    """kill -9 to a process, and to its compiler, in the middle of a build (cpp_extension's own lock
    file is left behind): the next process neither waits nor hangs; it builds, and here says why the
    build failed."""
    hanging = {**stand_in, "STAND_IN_HANGS": "1"}
    first = subprocess.Popen([sys.executable, "-c", USE_CPP], cwd=ROOT, env=hanging, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        assert "building the C++ backend" in first.stderr.readline()
        stale = my_bn_cpp.build_directory() / "lock"
        deadline = time.monotonic() + 60
        while not stale.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stale.exists(), "cpp_extension took no lock"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert stale.exists()
    done = run_python(USE_CPP, stand_in, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    assert "stand-in compiler" in done.stderr.strip().splitlines()[-1]


def test_waiting_for_another_build_is_bounded(stand_in):
    """While another process holds the build lock, one line says so; after ``BUILD_WAIT_S`` (2 s here)
    the Python backend runs, with the reason."""
    from filelock import FileLock

    folder = my_bn_cpp.build_directory()
    folder.mkdir(parents=True)
    hold = (f"import filelock, time\nlock = filelock.FileLock({str(folder / 'build.lock')!r}); lock.acquire()\n"
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_python("from my_bn import cpp; cpp.BUILD_WAIT_S = 2; print(cpp.available())", stand_in)
    finally:
        holder.kill()
        holder.wait()
    assert done.stdout.strip() == "False", done.stderr
    waiting, gave_up = done.stderr.strip().splitlines()
    assert waiting.startswith("MyBN: waiting for another process that is building the C++ backend")
    assert "another process has been building it" in gave_up and "over 2 s" in gave_up
    with FileLock(folder / "build.lock", timeout=5):  # released with its holder
        pass


def test_another_checkout_loads_this_build_and_another_source_builds_its_own(tmp_path):
    """The cache is keyed by what the build depends on, not by where the checkout is: a second
    checkout of the same files loads the library built for this one, silently and without
    rebuilding it; a changed source gets a folder of its own."""
    assert my_bn_cpp.available()
    library = my_bn_cpp.build_directory() / f"{my_bn_cpp.name()}.so"
    before = library.stat().st_mtime_ns
    other = tmp_path / "another checkout"
    other.mkdir()
    shutil.copytree(ROOT / "my_bn", other / "my_bn", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import torch; from my_bn import MyBN, cpp\n"
            "print(cpp.build_directory())\n"
            "print(MyBN(3, backend='cpp')(torch.randn(8, 3, requires_grad=True)).grad_fn.name())")
    done = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split("\n")[:2] == [str(my_bn_cpp.build_directory()), CPP_NODE]
    assert library.stat().st_mtime_ns == before
    (other / "my_bn/cpp.cpp").write_text((ROOT / "my_bn/cpp.cpp").read_text() + "// changed\n")
    done = subprocess.run([sys.executable, "-c", "from my_bn import cpp; print(cpp.build_directory())"], cwd=other,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() != str(my_bn_cpp.build_directory())


def test_backend_is_checked_and_shown():
    with pytest.raises(ValueError, match="backend must be one of 'python', 'cpp', got 'cuda'"):
        MyBN(3, backend="cuda")
    assert "backend='cpp'" in repr(MyBN(3, backend="cpp"))
    assert "backend" not in repr(MyBN(3, backend="python"))


def test_the_backends_agree_per_step_and_drift_apart_over_a_run():
    """Why the experiments keep the Python backend by default: one step of the MyBN net agrees between
    the backends to float32 rounding, but ten epochs of Adam amplify that rounding, so a run's final
    test MSE depends on which backend ran (and so, with backend="cpp" as a default, on whether the
    machine had a compiler)."""
    data = make_dataset(5.0, 0)
    order = loop.BatchOrder(len(data.x_train), 64, 10, 0)
    xb = data.x_train[order[0][0]]
    step = []
    for backend in ("python", "cpp"):
        net = TanhMLP("my_bn", 0, mybn_backend=backend)
        loss = net(xb).square().mean()
        loss.backward()
        step.append([loss.detach(), *(p.grad for p in net.parameters())])
    for ours, theirs in zip(*step, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # float32 sums, added in other orders
    final = [
        regression.train_one(TanhMLP("my_bn", 0, mybn_backend=b), data, order, 0.02)["test_mse"][-1]
        for b in ("python", "cpp")
    ]
    assert abs(final[0] - final[1]) > 1e-3 * final[0]


def test_the_networks_and_train_py_pass_the_backend_on():
    """--mybn-backend reaches every MyBN layer of both networks, and nothing else."""
    from lab.nets import SigmoidMLP
    from lab.regression import Regression
    from lab.settings import build_parser

    config = Regression(**vars(build_parser(Regression, None).parse_args(["--mybn-backend", "cpp"])))
    for net in (TanhMLP("my_bn", mybn_backend=config.mybn_backend), SigmoidMLP("my_bn", mybn_backend="cpp")):
        norms = [m for m in net.modules() if isinstance(m, MyBN)]
        assert norms and all(m.backend == "cpp" for m in norms)
    assert not any(isinstance(m, MyBN) for m in TanhMLP("torch_bn", mybn_backend="cpp").modules())


def test_a_finished_build_loads_from_a_read_only_cache(monkeypatch, cpp_backend):
    """A cache where nothing can be written (a shared or a container's cache holding a finished build):
    the build is loaded without its lock, which could not be opened for writing there. (It fell back to
    Python.) The tests run as root here, whom no file mode stops, so the lock's file is what refuses."""
    import filelock

    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system", str(my_bn_cpp.build_directory() / "build.lock"))

    monkeypatch.setattr(filelock, "FileLock", read_only)
    assert (my_bn_cpp.build_directory() / "built").exists()
    assert hasattr(my_bn_cpp.load(), "train")
