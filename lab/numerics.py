"""The project's CPU numerics, decided in one place: ``apply()``, called first by every entry point that
produces the record (train.py, compare.py, verdicts.py, and the test session), before torch computes.

The committed record (results/, picture/, the README) is the same bytes on any x86-64 CPU with AVX2,
Intel or AMD, with or without AVX-512. PyTorch's CPU wheel does not promise that by itself: its parts
pick their code by the CPU they find, and each order of rounding sends a float32 run somewhere else.

- ATen's vectorised kernels (sums, Adam's step, tanh) are chosen by the CPU's instruction set
  (``torch.backends.cpu.get_cpu_capability()``). Portable: ``ATEN_CPU_CAPABILITY=avx2``, the AVX2
  kernels on every CPU that has AVX2 (every Intel CPU since Haswell, 2013, every AMD one since Zen,
  2017); on one without, PyTorch runs other kernels, and ``apply()`` says so and stops.
- MKL's matrix products (every nn.Linear) pick a code path by the CPU and its vendor. Portable:
  ``MKL_CBWR=COMPATIBLE``, the mode of MKL's Conditional Numerical Reproducibility that gives the same
  results on Intel and non-Intel CPUs (MKL honours its AVX2 and AVX512 modes on Intel CPUs only: on AMD
  it falls back to its automatic choice).
- oneDNN compiles the convolutions for the CPU's instruction set. Portable: ``ONEDNN_MAX_CPU_ISA=AVX2``,
  its AVX2 code on every CPU (im2col and MKL's product instead, with oneDNN off, is three times slower
  on the conv net). NNPACK, which PyTorch picks for batches of 16 or more when oneDNN is off, blocks its
  sums by the cache sizes: off (``torch.backends.nnpack``).
- MKL's vector math, which ``torch.sqrt`` (and acos, asin, atan, tan, cdist) runs on the CPU, is not
  correctly rounded and not covered by ``MKL_CBWR``: its last bit differs from CPU to CPU (seen between
  an AMD CPU and an emulated Intel one, both under this policy). No setting reaches it, so the lab and
  the layer never call it: they take ``torch.rsqrt``, 1/sqrt in IEEE operations, the same on every CPU
  (``tests/lab/test_numerics.py`` holds the code to that).

Torch, MKL and oneDNN read the variables when they first compute, not when torch is imported, so
``apply()`` works until then and checks that it did. Threads are the experiments' own (a fixed count
per run); glibc's libm picks its FMA variants on every CPU with AVX2. Other architectures (ARM) and
CUDA run other code: their results cannot match the record's bytes, and ``describe()``, which every
results file records as its ``numerics``, says what ran so that a reader sees why a rerun differs.

``BN_NUMERICS=native`` in the environment turns the policy off: the machine's fastest kernels, as
PyTorch picks them. Float64 runs then differ from the record in their last digits, float32 runs in
more (a long Adam run ends elsewhere, as it does on another seed); the verdicts are built to survive
that, and ``verdicts.py --rounding`` checks that they do.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

import torch

VARIABLE = "BN_NUMERICS"
POLICIES = ("portable", "native")
ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
X86 = platform.machine().lower() in ("x86_64", "amd64")  # where the variables above choose the kernels
USER_ENVIRONMENT = {k: os.environ.get(k) for k in ENVIRONMENT}  # as the user set them, before apply() (None: unset)
MKL_BRANCHES = {1: "off", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                10: "AVX2", 12: "AVX512"}  # MKL's mkl_cbwr_get codes (mkl_service.h)


def policy() -> str:
    """The policy ``BN_NUMERICS`` asks for (portable where unset); any other value exits with one line."""
    value = os.environ.get(VARIABLE, "").strip().lower() or "portable"
    if value not in POLICIES:
        sys.exit(f"{VARIABLE}={os.environ[VARIABLE]!r}: choose {' or '.join(POLICIES)}")
    return value


def mkl_branch() -> str | None:
    """MKL's reproducibility branch in this process (its ``mkl_cbwr_get``), None where torch has no MKL.
    Asking fixes it: MKL reads ``MKL_CBWR`` once."""
    if not torch.backends.mkl.is_available():
        return None
    try:
        code = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get(1)
    except (OSError, AttributeError):  # another build of PyTorch, whose MKL is not ours to ask
        return None
    return MKL_BRANCHES.get(code, str(code))


def portable() -> bool:
    """Whether this process computes under the portable policy (each of its four settings in force)."""
    return (not torch._C._get_nnpack_enabled() and all(os.environ.get(k) == v for k, v in ENVIRONMENT.items())
            and (not X86 or (torch.backends.cpu.get_cpu_capability() == "AVX2"
                             and mkl_branch() in (ENVIRONMENT["MKL_CBWR"], None))))


def apply() -> str:
    """Put the policy ``BN_NUMERICS`` asks for in force in this process (and the processes it starts);
    return its name. Exits with one line where torch has computed already under other numerics."""
    chosen = policy()
    if chosen == "portable":
        os.environ.update(ENVIRONMENT)
        torch.backends.nnpack.set_flags(False)
        if not portable():
            why = "torch computed before" if not X86 or torch.cpu._is_avx2_supported() else "this CPU has no AVX2"
            sys.exit(f"numerics: the portable numerics cannot be had here ({why}); set {VARIABLE}=native, or apply "
                     "them before torch computes")
    return chosen


def environment_for(chosen: str) -> dict[str, str]:
    """This process's environment for a child process that is to compute under policy ``chosen``: the policy's
    variables for portable; for native, the user's own values of them (unset where the user set none), not the
    ones ``apply()`` put here."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env.update(ENVIRONMENT if chosen == "portable" else {k: v for k, v in USER_ENVIRONMENT.items() if v is not None})
    return {**env, VARIABLE: chosen}


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def describe() -> dict:
    """What chose this process's rounding, as a results file records it. Portable: the settings and the
    architecture, nothing else of the machine (the same record on every x86-64 CPU). Native: the CPU's
    name and instruction set too, which then decide the last digits."""
    described = {"machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "mkl_cbwr": mkl_branch(), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                 "mkldnn": torch.backends.mkldnn.enabled, "nnpack": torch._C._get_nnpack_enabled()}
    if portable():
        return {"policy": "portable", **described}
    return {"policy": "native", "cpu": cpu_name(), **described}
