"""The sweep experiment (experiments/sweep.py), end to end on a tiny configuration."""

import json

import pytest

import train


def test_sweep_smoke_run(tmp_path):
    argv = ["sweep", "--ranges", "1", "3", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert results["experiment"] == "sweep" and results["config"]["noise_scaled"] == 0.1
    assert not results["config"]["diagnostics"]
    assert {d["range"][1]: d["noise_std"] for d in results["datasets"]} == {1.0: 0.1, 3.0: pytest.approx(0.9)}
    assert {run["model"] for run in results["runs"]} == {"plain", "torch_bn", "my_bn"}
    assert not (tmp_path / "results.json").exists()  # only the experiment asked for
