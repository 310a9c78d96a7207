"""MyBN's C++ backend on the CPU, ``MyBN(..., backend="cpp")``: builds and loads ``my_bn/cpp.cpp``.

The source is compiled on first use with ``torch.utils.cpp_extension`` (g++ or clang++, OpenMP, and
``ninja``, which requirements.txt pins); later processes load the built library in a fraction of a
second. Where it cannot be built (no compiler, a failed build), one line on stderr says why and
``MyBN`` runs its Python backend instead: the repository works without a compiler.

The build cache. Each build has a folder of its own in PyTorch's extension cache
(``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``), named by a hash of everything the
library depends on (``build_key``): the source, the flags, the compiler, the CPU's features (the code
is built with -march=native), and the PyTorch and Python it is built against, paths included. Two
checkouts of the same source with the same PyTorch share one build; another source, PyTorch, venv
or machine gets a folder of its own, so nothing is ever rebuilt over a build that another checkout
still uses. A build happens only where its folder holds no finished build, and then one line on
stderr says so; a finished build is loaded without taking the lock, so a cache that is read-only (shared,
or a container's) serves it. Builds are serialised by a lock that the operating system releases when its holder
ends, however it ends (``kill -9`` included): a build that was stopped leaves nothing that makes a
later process wait, and a process waits at most ``BUILD_WAIT_S`` for another that is building.

What the backend covers: a training-mode forward and backward on the CPU, for (N, C), (N, C, L)
and (N, C, H, W) input (any rank from 2), float32 and float64, half and bfloat16 accumulated in
float32, contiguous, channels-last or transposed (N, C) memory (any other layout is copied first),
parameters and running estimates of any strides. The whole layer (statistics, output, running
estimates, and the autograd node) is one call into C++, with the backward hand-written there as
well. Everything else runs the Python paths of ``my_bn/function.py``, which ``handles`` decides: eval mode,
other devices, ``sync`` across processes, ``torch.func`` transforms, forward-mode AD,
``torch.compile``/``torch.export``, ``torch.jit.trace``, ``make_fx`` and other dispatch or function
modes, tensor subclasses, and ``my_bn.REFERENCE_ONLY``. The backward runs the reference's, called
back from C++, under double backward (``create_graph=True``, so that autograd records it) and where
the output gradient is batched by vmap (``torch.autograd.grad(..., is_grads_batched=True)``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import torch
import torch.autograd.forward_ad

from my_bn.function import differentiable_backward

SOURCE = Path(__file__).with_suffix(".cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BUILD_WAIT_S = 600.0  # the longest a process waits for another one's build (one takes about a minute)
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # what the loops may read: no subclass, whose operations are its own


def compiler() -> str | None:
    """The C++ compiler torch.utils.cpp_extension will call ($CXX, else c++), if it exists."""
    return shutil.which(os.environ.get("CXX", "c++"))


def build_key() -> str:
    """A hash of everything the built library depends on (see the module docstring)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    cpu = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), platform.processor())
    parts = [SOURCE.read_bytes(), *map(str.encode, [*FLAGS, "|", *LDFLAGS, str(compiler()), cpu, platform.machine(),
             torch.__version__, str(torch.version.git_version), str(Path(torch.__file__).parent),
             sys.implementation.cache_tag, sysconfig.get_paths()["include"]])]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def name() -> str:
    """The extension's module name, and the name of its folder in the build cache."""
    return f"my_bn_cpp_{build_key()}"


def build_directory() -> Path:
    """This build's folder: ``$TORCH_EXTENSIONS_DIR`` (else PyTorch's default cache) / ``name()``."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()) / name()


def build_error(message: str) -> str:
    """The line that says why a build failed: the compiler's first error (file:line:col: error: ...,
    without the file's folder; the source named as in the package), not the command line that
    cpp_extension's message starts with."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        found = re.search(r"([^/\s:]+)(:\d+(?::\d+)?: (?:fatal )?error: .*)", line)
        if found:  # the source is built from a copy of my_bn/cpp.cpp: named as the reader knows it
            file = "my_bn/" + SOURCE.name if found.group(1) == SOURCE.name else found.group(1)
            return file + found.group(2)
    commands = ("[", "FAILED:", "ninja:", "Error building extension", "Error compiling objects")
    for line in lines:  # a linker's or a driver's error: its first line that is not a command
        if "error" in line.lower() and not line.startswith(commands) and " -c " not in line and " -o " not in line:
            return line
    return lines[0] if lines else "the build failed"


def load(wait_s: float | None = None) -> ModuleType:
    """The extension module: imported from its folder where it was built before, else built first
    (one line on stderr). Waits up to ``wait_s`` (default ``BUILD_WAIT_S``) for another process's
    build. Raises RuntimeError, with the reason, where it cannot be had."""
    wait_s = BUILD_WAIT_S if wait_s is None else wait_s
    if compiler() is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')} is not on PATH)")
    try:
        from filelock import FileLock, Timeout
    except ImportError:
        raise RuntimeError("filelock is not installed: pip install 'my-bn[cpp]'") from None

    folder = build_directory()
    ext, built = folder.name, folder / "built"  # "built": written once a build has loaded
    if built.exists():  # a finished build loads without the lock: a read-only cache (shared, a container's) works
        module = _import(ext, folder)
        if module is not None:
            return module
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / "build.lock")  # flock(2): released by the kernel when its holder ends
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"MyBN: waiting for another process that is building the C++ backend in {folder}", file=sys.stderr)
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            raise RuntimeError(f"another process has been building it in {folder} for over {wait_s:g} s") from None
    try:
        if built.exists():
            module = _import(ext, folder)
            if module is not None:
                return module
            built.unlink()  # a library gone or damaged since: built again, below
        print(f"MyBN: building the C++ backend once (my_bn/{SOURCE.name}, about a minute) in {folder}", file=sys.stderr)
        return _build(ext, folder, built)
    finally:
        lock.release()


def _import(ext: str, folder: Path) -> ModuleType | None:
    """The extension module built in ``folder``, or None where its library is gone or does not load."""
    try:
        spec = importlib.util.spec_from_file_location(ext, folder / f"{ext}.so")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (ImportError, OSError):
        return None


def _build(ext: str, folder: Path, built: Path) -> ModuleType:
    """Compile and import the extension in ``folder``; we hold its lock, so nobody else builds there."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # pip's ninja, in a virtual environment that is not activated
        try:
            import ninja
        except ImportError:
            raise RuntimeError("ninja is not installed: pip install 'my-bn[cpp]'") from None

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    # What a stopped build left: cpp_extension's own lock file, which it would wait on forever, and a
    # library perhaps half written.
    for leftover in (folder / "lock", folder / f"{ext}.so"):
        leftover.unlink(missing_ok=True)
    source = folder / SOURCE.name  # built from a copy in the folder: the build does not depend on the checkout
    shutil.copyfile(SOURCE, source)
    try:
        module = cpp_extension.load(ext, [str(source)], extra_cflags=list(FLAGS), extra_ldflags=list(LDFLAGS),
                                    build_directory=str(folder))  # copies: load() appends to them
    except Exception as exc:
        raise RuntimeError(build_error(str(exc))) from exc
    built.write_text(f"{ext}: built by PyTorch {torch.__version__} from {SOURCE}\n")
    return module


@functools.cache
def _loaded() -> tuple[object | None, str | None]:
    """(the built extension module, None), or (None, why it is not available) after one line on stderr."""
    try:
        module = load()
    except Exception as exc:  # noqa: BLE001 - whatever stops the build, MyBN carries on in Python
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        print(f"MyBN: the C++ backend is not available here ({reason}); using the Python backend", file=sys.stderr)
        return None, reason
    module.set_differentiable_backward(differentiable_backward)
    return module, None


def extension() -> ModuleType | None:
    """The built extension module, or None (see ``unavailable_because``)."""
    return _loaded()[0]


def available() -> bool:
    """Whether the C++ backend runs here (building it first, if it has not been built)."""
    return extension() is not None


def unavailable_because() -> str | None:
    """Why the C++ backend does not run here (building it first, if it has not been built), or None."""
    return _loaded()[1]


def handles(x: torch.Tensor, *per_channel: torch.Tensor | None) -> bool:
    """Whether a training call of one process on ``x``, with ``per_channel``'s parameters and running
    estimates, runs in C++ (see the module docstring; MyBN checks ``my_bn.REFERENCE_ONLY`` itself):
    plain CPU tensors whose memory the loops can read, with nothing that records or transforms the
    operations (a compiler, a tracer, torch.func, forward-mode AD, a dispatch or function mode)."""
    # Called on every training step: on the experiment's small inputs each microsecond shows (a generator
    # over per_channel and x.device, which builds a device object, cost five of them), so plain checks.
    if not (type(x) is torch.Tensor and x.is_cpu and x.layout == torch.strided and x.dtype in SUPPORTED):
        return False
    for t in per_channel:
        if t is not None and not (type(t) in _PLAIN and t.is_cpu):
            return False
    return (
        not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._are_functorch_transforms_active()
        and torch.autograd.forward_ad._current_level < 0  # no dual_level open: forward-mode AD runs in Python
        and not torch._C._len_torch_dispatch_stack()  # make_fx, FakeTensorMode, ...
        and not torch._C._len_torch_function_stack()
        and extension() is not None
    )


def train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, running_mean: torch.Tensor | None,
          running_var: torch.Tensor | None, factor: float, eps: float) -> torch.Tensor:
    """Training-mode batch norm of ``x`` with the batch's statistics; the running estimates, where
    given, move towards them in place by ``factor``."""
    return extension().train(x, weight, bias, running_mean, running_var, factor, eps)
