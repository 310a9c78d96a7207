"""MyBN's C++ backend on the CPU, ``MyBN(..., backend="cpp")``: builds and loads ``my_bn_cpp.cpp``.

The source is compiled on first use with ``torch.utils.cpp_extension`` (g++ or clang++, OpenMP, and
``ninja``, which requirements.txt pins), once per machine, into PyTorch's extension cache
(``~/.cache/torch_extensions``, or ``$TORCH_EXTENSIONS_DIR``); later processes load the built
library in a fraction of a second. Where it cannot be built (no compiler), one line on stderr says
so and ``MyBN`` runs its Python backend instead: the repository works without a compiler.

What the backend covers: a training-mode forward and backward on the CPU, for (N, C), (N, C, L)
and (N, C, H, W) input (any rank from 2), float32 and float64, half and bfloat16 accumulated in
float32, contiguous, channels-last or transposed (N, C) memory (any other layout is copied first).
The whole layer (statistics, output, running estimates, and the autograd node) is one call into
C++, with the backward hand-written there as well. Everything else runs the Python paths of
``my_bn.py``, which ``handles`` decides: eval mode, other devices, ``sync`` across processes,
``torch.func`` transforms, ``torch.compile``/``torch.export``, ``torch.jit.trace`` and
``my_bn.REFERENCE_ONLY``. Double backward (``create_graph=True``) runs the reference's backward,
called back from C++, so that autograd records it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("my_bn_cpp.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp"]
SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def name() -> str:
    """The extension's name, and so its cache directory: -march=native code is for this kind of CPU
    only, so the name carries a hash of the CPU's feature flags (a home directory may be shared)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return "my_bn_cpp_" + hashlib.sha1(flags.encode()).hexdigest()[:8]


def compiler() -> str | None:
    """The C++ compiler torch.utils.cpp_extension will call ($CXX, else c++), if it exists."""
    return shutil.which(os.environ.get("CXX", "c++"))


@functools.cache
def extension():
    """The built extension module, or None after one line on stderr saying why it is not available."""
    try:
        if compiler() is None:
            raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')} is not on PATH)")
        if shutil.which("ninja") is None:  # pip's ninja, in a virtual environment that is not activated
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        from torch.utils import cpp_extension

        ext = name()
        root = Path(cpp_extension.get_default_build_root())  # .../torch_extensions, then one level per Python
        if not any(root.glob(f"*/{ext}/{ext}.so")) and not Path(root, ext, f"{ext}.so").exists():
            print(f"MyBN: building the C++ backend once ({SOURCE.name}, about a minute)", file=sys.stderr)
        module = cpp_extension.load(ext, [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"])
    except Exception as exc:  # noqa: BLE001 - whatever stops the build, MyBN carries on in Python
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"MyBN: the C++ backend is not available here ({reason}); using the Python backend", file=sys.stderr)
        return None
    from my_bn import differentiable_backward  # here: my_bn imports this module

    module.set_differentiable_backward(differentiable_backward)
    return module


def available() -> bool:
    """Whether the C++ backend runs here (building it first, if it has not been built)."""
    return extension() is not None


def handles(x: torch.Tensor) -> bool:
    """Whether a training call of one process on ``x`` runs in C++ (see the module docstring; MyBN
    checks ``my_bn.REFERENCE_ONLY`` itself)."""
    return (
        x.device.type == "cpu"
        and x.dtype in SUPPORTED
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._are_functorch_transforms_active()
        and extension() is not None
    )


def train(x, weight, bias, running_mean, running_var, factor: float, eps: float) -> torch.Tensor:
    """Training-mode batch norm of ``x`` with the batch's statistics; the running estimates, where
    given, move towards them in place by ``factor``."""
    return extension().train(x, weight, bias, running_mean, running_var, factor, eps)
