"""train.py, through the path a user takes: every experiment on a tiny configuration, its flags, their
refusals, and what its results record."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import train
from helpers import ROOT, TINY
from lab import results
from lab.nets import MODELS
from lab.results import FORMAT


def test_help_documents_experiments_and_flags():
    text = train.make_parser().format_help()
    for word in ("controls", "sweep", "float64", "--noise-scaled", "--no-diagnostics", "--models"):
        assert word in text, word


def test_smoke_run_writes_valid_results(tiny_results, capsys):
    text = (tiny_results / "results.json").read_text()
    assert text.startswith('{\n"format": ' + str(FORMAT) + ",\n")  # first: a reader checks it first
    results = json.loads(text)
    config = results["config"]
    assert config["ranges"] == [1.0, 5.0] and config["seeds"] == [0, 1] and config["epochs"] == 2
    assert config["lr"] == 0.02 and config["batch_size"] == 64 and config["dtype"] == "float32"
    assert len(results["runs"]) == 2 * 3 * 2
    keys = {(run["range"][1], run["model"], run["seed"]) for run in results["runs"]}
    assert keys == {(r, m, s) for r in (1.0, 5.0) for m in MODELS for s in (0, 1)}
    for run in results["runs"]:
        assert run["range"] == [-run["range"][1], run["range"][1]]
        assert len(run["test_mse"]) == 3  # before training and after each epoch
        assert len(run["train_loss"]) == 2 * math.ceil(1000 / 64)
        assert len(run["predictions"]) == 100
        assert all(math.isfinite(v) for v in run["test_mse"] + run["train_loss"])
    assert len(results["datasets"]) == 4


def test_all_nets_of_a_seed_see_the_same_start(tiny_results):
    results = json.loads((tiny_results / "results.json").read_text())
    for r in (1.0, 5.0):
        for s in (0, 1):
            starts = [run["test_mse"][0] for run in results["runs"] if run["range"][1] == r and run["seed"] == s]
            # same weights, and before training BN in eval is x / sqrt(1 + eps): all but the identity
            assert len(starts) == 3 and max(starts) == pytest.approx(min(starts), rel=1e-4)


def test_float64_mybn_tracks_batchnorm1d(tiny_results):
    results = json.loads((tiny_results / "float64" / "results.json").read_text())
    by_key = {(run["range"][1], run["model"], run["seed"]): run for run in results["runs"]}
    for r in (1.0, 5.0):
        for s in (0, 1):
            ref, mine = by_key[(r, "torch_bn", s)], by_key[(r, "my_bn", s)]
            torch.testing.assert_close(mine["train_loss"], ref["train_loss"], rtol=1e-6, atol=0)
            torch.testing.assert_close(mine["test_mse"], ref["test_mse"], rtol=1e-6, atol=0)


def test_two_processes_reproduce_one_with_synchronised_mybn(tiny_results):
    """train.py ddp: the batch split over two processes (DDP, gloo), against the float64 run in one."""
    ddp = json.loads((tiny_results / "ddp" / "results.json").read_text())
    single = json.loads((tiny_results / "float64" / "results.json").read_text())
    assert ddp["environment"]["processes"] == 2 and ddp["config"]["dtype"] == "float64"
    one = {(run["range"][1], run["model"], run["seed"]): run for run in single["runs"]}
    for run in ddp["runs"]:
        ref = one[(run["range"][1], "my_bn" if run["model"] == "my_bn_local" else run["model"], run["seed"])]
        gap = max(abs(a / b - 1) for a, b in zip(run["train_loss"], ref["train_loss"], strict=True))
        if run["model"] == "my_bn":
            assert gap < 1e-6  # synchronised: the single-process run, to float64 rounding
        else:
            assert gap > 1e-3  # per-process statistics: another run


def test_rerun_is_bit_identical(tiny_results, tmp_path):
    assert train.main([*TINY, "--out", str(tmp_path)]) == 0
    first, again = (json.loads((d / "results.json").read_text()) for d in (tiny_results, tmp_path))
    assert first["config"].pop("out") != again["config"].pop("out")
    assert first == again  # every float of every run, exactly


def test_final_batch_of_one_does_not_crash(tmp_path):
    argv = ["--ranges", "1", "--seeds", "0", "--epochs", "1", "--batch-size", "999", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert all(len(run["train_loss"]) == 1 for run in runs)


BAD_FLAGS = {
    "--ranges 0": (["--ranges", "0"], "--ranges"),
    "negative range": (["--ranges", "-5"], "--ranges"),
    "--epochs 0": (["--epochs", "0"], "--epochs"),
    "--batch-size 1": (["--batch-size", "1"], "--batch-size"),
    "unknown model": (["--models", "resnet"], "--models"),
    "non-numeric": (["--lr", "fast"], "--lr"),
    "non-numeric seed": (["--seeds", "one"], "--seeds"),
    "nan": (["--ranges", "nan"], "--ranges"),
    "bad dtype": (["--dtype", "float16"], "--dtype"),
    "no CUDA": (["--device", "cuda"], "--device"),
    "too small a share": (["ddp", "--batch-size", "3"], "--nproc"),
    "no share at all, synchronised": (["--nproc", "65", "--models", "my_bn"], "--nproc"),
    "no share at all, plain": (["--nproc", "3", "--batch-size", "2", "--models", "plain"], "--nproc"),
    "inputs overflow": (["--ranges", "1e308"], "--ranges"),
    "targets overflow float32": (["--ranges", "1e200", "--dtype", "float32"], "--dtype"),
    "squares overflow float32": (["--ranges", "1e10"], "--ranges"),
    "a overflows": (["--a", "1e308"], "--a"),
    "seed too large": (["--seeds", "99999999999999999999"], "--seeds"),
    "a common rate off the rates": (["residual", "--common-rate", "0.2"], "--common-rate"),
    "an unknown residual net": (["residual", "--variants", "resnet"], "--variants"),
    "no residual block": (["residual", "--depths", "0"], "--depths"),
}


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(name, tmp_path, capsys):
    argv, flag = BAD_FLAGS[name]
    if name == "no CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err, err
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_unwritable_out_is_rejected_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exc:
        train.main(["--out", str(blocker / "results")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


def test_script_entry_point_help_and_error():
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_text.returncode == 0
    for flag in (
        "--ranges",
        "--models",
        "--seeds",
        "--epochs",
        "--batch-size",
        "--lr",
        "--dtype",
        "--device",
    ):
        assert flag in help_text.stdout
    assert "(default: 0.02)" in help_text.stdout and "(default: 1.0 5.0)" in help_text.stdout
    bad = subprocess.run([sys.executable, "train.py", "--epochs", "0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("train.py: error: argument --epochs")


UNUSED_FLAGS = {  # a flag the named experiment does not read -> the start of its one-line refusal
    ("mnist", "--ranges", "3"): "argument --ranges: the mnist experiment does not use it",
    ("mnist", "--no-diagnostics"): "argument --diagnostics: the mnist experiment does not use it",
    ("mnist", "--nproc", "2"): "argument --nproc: the mnist experiment runs with 1 only",
    ("lr", "--optimizer", "sgd"): "argument --optimizer: the lr experiment does not use it",
    ("lr", "--lr", "0.1"): "argument --lr: the lr experiment does not use it",
    ("lr", "--mybn-backend", "cpp"): "argument --mybn-backend: the lr experiment runs with python only",
    ("landscape", "--ranges", "3"): "argument --lr: landscape has no learning rate of its own for R = 3",
    ("conv", "--noniid-classes", "20"): "argument --noniid-classes: a batch of 32 can be drawn from 1 to 10 of the "
                                        "10 classes",
}


@pytest.mark.parametrize("argv", UNUSED_FLAGS, ids=" ".join)
def test_a_flag_the_experiment_does_not_use_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_config(list(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and UNUSED_FLAGS[argv] in err, err


def test_all_leaves_such_a_flag_aside_where_it_is_not_read(capsys):
    """`train.py all` with a flag that some experiments do not read: one note each, and those run as
    they always do (their results record what ran)."""
    configs = train.parse_config(["all", "--ranges", "3", "--mybn-backend", "cpp", "--lr", "0.1"])
    notes = capsys.readouterr().err.splitlines()
    assert any(n.startswith("note: --ranges: the mnist experiment does not use it") for n in notes), notes
    assert any(n.startswith("note: --mybn-backend: the lr experiment runs with python only") for n in notes), notes
    assert configs["lr"].mybn_backend == "python" and configs["main"].mybn_backend == "cpp"
    assert configs["landscape"].lr == 0.1 and configs["main"].ranges == [3.0]


def test_mnist_runs_what_its_flags_say_and_records_only_that(tmp_path):
    """--optimizer and --dtype reach the MNIST runs (each changes what they measure); settings of the
    regression task are not in its results; device and processes are the ones it ran on."""
    from experiments import mnist

    base = mnist.MnistSettings(epochs=1, seeds=[0])
    measured = {}  # a unit's sigmoid-input percentiles at the end (6 digits): float64 moves them too
    for change in ({}, {"optimizer": "adam"}, {"dtype": "float64"}):
        run_ = mnist.mnist_members(dataclasses.replace(base, **change), "my_bn")[0]  # lr 0.05, seed 0
        measured[str(change)] = tuple(run_["unit_q"][-1])
    assert len(set(measured.values())) == 3, measured
    out = tmp_path / "out"
    argv = ["mnist", "--models", "my_bn", "--seeds", "0", "--epochs", "1", "--dtype", "float64", "--out", str(out)]
    assert train.main(argv) == 0
    saved = json.loads((out / "mnist" / "results.json").read_text())
    assert saved["config"]["dtype"] == "float64" and saved["config"]["optimizer"] == "sgd"
    assert not {"ranges", "a", "b", "noise_std", "noise_scaled", "diagnostics"} & saved["config"].keys()
    assert saved["config"]["device"] == saved["environment"]["device"] == "cpu"


def test_a_backend_that_could_not_run_is_not_recorded_as_run(tmp_path):
    """--mybn-backend cpp without a compiler: the Python backend runs, and the results say so (the
    config's backend is the one that ran; the environment holds the fallback and why)."""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    argv = ["--mybn-backend", "cpp", "--ranges", "1", "--models", "my_bn", "--seeds", "0", "--epochs", "1",
            "--no-diagnostics", "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "train.py: --mybn-backend cpp: the C++ backend was not available" in done.stderr
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["mybn_backend"] == "python"
    fallback = saved["environment"]["fallback"]
    assert "no C++ compiler" in fallback and "Python backend" in fallback


def test_results_are_strict_json_and_a_diverged_run_reads_back(tmp_path):
    """The lr grid's top rates diverge: their numbers are null in the file (strict JSON, no NaN or
    Infinity), the run says it diverged, and it reads back as NaN, which the table takes."""
    from experiments import lr

    out = tmp_path / "out"
    argv = ["lr", "--ranges", "5", "--models", "plain", "--seeds", "0", "--epochs", "2", "--out", str(out)]
    assert train.main(argv) == 0
    text = (out / "lr" / "results.json").read_text()

    def refuse(constant):
        raise AssertionError(f"{constant} in a results file")

    saved = json.loads(text, parse_constant=refuse)
    blown = [run_ for run_ in saved["runs"] if None in run_["test_mse"]]
    assert blown and all(run_["diverged"] for run_ in blown)
    loaded = results.load_results(out / "lr")
    back = next(run_ for run_ in loaded["runs"] if run_["lr"] == blown[0]["lr"] and run_["optimizer"] == "sgd")
    assert any(math.isnan(v) for v in back["test_mse"]) and lr.diverged(back)
    assert "none" in lr.lr_table(loaded) or "1 (lr" in lr.lr_table(loaded)
    assert results.to_json({"x": [1.0, math.inf, -math.inf, math.nan]}) == '{\n"x": [\n1.0,\nnull,\nnull,\nnull\n]\n}\n'
