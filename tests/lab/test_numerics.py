"""lab/numerics.py: one CPU numerics policy for everything that makes the record. It is in force in this
session, it overrides the knobs that pick kernels by the CPU, it is refused where it comes too late, and
a results file records it instead of the CPU."""

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT
from lab import numerics

# A small conv net and linear layer, forward and backward, and a float32 Adam step: every kind of kernel
# the experiments' runs go through (oneDNN or NNPACK convolutions, MKL products, ATen's vectorised ops).
WORKLOAD = """
import hashlib, sys, torch
from lab import numerics
numerics.apply()
gen = torch.Generator().manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(32 * 100, 10), torch.nn.Tanh())
for p in net.parameters():
    p.data.normal_(0, 0.1, generator=gen)
opt = torch.optim.Adam(net.parameters(), lr=0.01)
for batch in (8, 64):
    x = torch.randn(batch, 16, 12, 12, generator=gen)
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest())
print(numerics.describe()["policy"])
"""


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("BN_NUMERICS", *numerics.ENVIRONMENT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_this_session_computes_under_the_policy_it_asks_for():
    described = numerics.describe()
    assert described["policy"] == numerics.policy() and numerics.portable() == (numerics.policy() == "portable")
    if described["policy"] == "portable":
        assert "cpu" not in described and described["onednn_max_cpu_isa"] == "AVX2" and not described["nnpack"]
        assert described["cpu_capability"] == "AVX2" or not numerics.X86
        assert described["mkl_cbwr"] in ("COMPATIBLE", None)


@pytest.mark.parametrize("value", ["fast", "AVX2"])
def test_an_unknown_policy_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv("BN_NUMERICS", value)
    with pytest.raises(SystemExit) as exc:
        numerics.policy()
    assert "BN_NUMERICS" in str(exc.value) and "portable or native" in str(exc.value) and "\n" not in str(exc.value)


def test_the_policy_overrides_the_knobs_that_pick_kernels_by_the_cpu():
    """Under the portable policy the ISA a user caps ATen, MKL or oneDNN at changes no bit (on this kind of
    machine each of these knobs moves the native result); under the native policy they reach the kernels."""
    portable = run(WORKLOAD)
    assert portable.returncode == 0, portable.stderr
    assert portable.stdout.split()[1] == "portable"
    knobs = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "SSE41",
             "MKL_CBWR": "AUTO"}
    again = run(WORKLOAD, **knobs)
    assert again.stdout == portable.stdout, again.stderr
    native = run(WORKLOAD, BN_NUMERICS="native", ATEN_CPU_CAPABILITY="avx2")
    assert native.returncode == 0 and native.stdout.split()[1] == "native", native.stderr


def test_too_late_is_refused_in_one_line():
    """Once torch has computed, its kernels and MKL's code path are fixed: the portable policy cannot be had, and
    says so, where the native one goes on."""
    late = ("import torch; torch.randn(64, 64) @ torch.randn(64, 64)\n"
            "from lab import numerics; numerics.apply(); print('ran')")
    refused = run(late)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "the portable numerics cannot be had here" in refused.stderr
    assert run(late, BN_NUMERICS="native").stdout == "ran\n"


def test_importing_the_lab_computes_nothing():
    """Every module of the lab imports without computing (a tensor made at import would fix the kernels before
    an entry point applies the policy)."""
    modules = [p.stem for p in ROOT.glob("*.py")] + [f"{p.parent.name}.{p.stem}" for d in ("lab", "experiments")
                                                     for p in ROOT.glob(f"{d}/*.py")]
    code = "import importlib\nfrom lab import numerics\n"
    code += f"for m in {sorted(modules)!r}: importlib.import_module(m)\nnumerics.apply()"
    code += "\nprint('ok')"
    done = run(code)
    assert done.stdout == "ok\n", done.stderr


def test_a_results_file_records_the_numerics_not_the_cpu(tiny_results):
    import json

    environment = json.loads((tiny_results / "results.json").read_text())["environment"]
    assert environment["numerics"] == numerics.describe()
    assert ("cpu" in environment["numerics"]) == (numerics.policy() == "native")


VECTOR_MATH = re.compile(r"([\w)\]]+)\.(sqrt|acos|asin|atan|tan|arccos|arcsin|arctan|cdist)_?\(")


def test_no_code_calls_mkls_vector_math():
    """torch.sqrt, acos, asin, atan, tan and cdist run MKL's vector math on the CPU, whose last bit depends on
    the CPU under any setting: nothing that makes the record calls them (Python's and numpy's are exact)."""
    exact = ("math", "np", "numpy", "cmath")
    calls = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in sorted(ROOT.rglob("*.py"))
             if path.parts[len(ROOT.parts)] not in ("tests", ".venv") for line in path.read_text().splitlines()
             for receiver, _ in VECTOR_MATH.findall(line) if receiver not in exact]
    assert calls == []


def test_a_child_computes_under_the_policy_asked_for(monkeypatch):
    """A process started for the native policy gets the user's own kernel settings (here: one set, one unset), not
    the ones this process's portable policy put in its environment; one for the portable policy gets the policy's."""
    user = dict.fromkeys(numerics.ENVIRONMENT) | {"MKL_CBWR": "AVX2"}
    monkeypatch.setattr(numerics, "USER_ENVIRONMENT", user)
    for k, v in numerics.ENVIRONMENT.items():
        monkeypatch.setenv(k, v)  # as apply() leaves them
    native = numerics.environment_for("native")
    assert native["BN_NUMERICS"] == "native" and native["MKL_CBWR"] == "AVX2"
    assert "ATEN_CPU_CAPABILITY" not in native and "ONEDNN_MAX_CPU_ISA" not in native
    portable = numerics.environment_for("portable")
    assert portable["BN_NUMERICS"] == "portable" and all(portable[k] == v for k, v in numerics.ENVIRONMENT.items())
