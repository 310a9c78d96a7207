"""bench.py runs, and prints what it measured; no timing is asserted here (speed lives in the benchmark)."""

import contextlib
import io
import json

import pytest

import bench
import my_bn
from helpers import ROOT
from my_bn import cpp as my_bn_cpp
from my_bn import fast as my_bn_fast


def test_shapes_are_checked():
    assert bench.parse_shape("64x10") == (64, 10) and bench.parse_shape("2x3x4") == (2, 3, 4)
    for bad in ("64", "64xten", "1x10", "0x5", "1x3x1"):
        with pytest.raises(ValueError, match="--shapes"):
            bench.parse_shape(bad)


def test_bad_shape_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--shapes", "64x"])
    assert exc.value.code == 2 and "--shapes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One small run of every kind of row (both allocators, two ranks, the reference variant) for the
    tests below: (its JSON file, what it printed). The spread and the ratios are not asserted."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = ["--shapes", "16x3", "4x3x5", "--no-train-loop", "--allocator", "both", "--reference",
            "--min-run-time", "0.01", "--json", str(out)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert bench.main(argv) == 0
    return out, printed.getvalue()


def test_smoke_run_prints_the_table_and_writes_json(measured):
    out, printed = measured
    payload = json.loads(out.read_text())
    rows = payload["kernels"]
    keys = {(r["allocator"], tuple(r["shape"]), r["variant"], r["pass"]) for r in rows}
    variants = ("native", "mybn", "mybn_reference", *(("mybn_cpp",) if my_bn_cpp.available() else ()))
    assert keys == {
        (a, s, v, p) for a in ("default", "tuned") for s in ((16, 3), (4, 3, 5)) for v in variants
        for p in ("fwd", "fwd+bwd")
    } | {(a, (16, 3), "floor", p) for a in ("default", "tuned") for p in ("fwd", "fwd+bwd")}
    for row in rows:
        assert row["median_ms"] > 0 and row["bound_ms"] > 0 and row["copy_bandwidth_GBs"] > 0
        assert row["fraction_of_bound"] == pytest.approx(row["bound_ms"] / row["median_ms"])
        same = (row["allocator"], row["shape"], row["pass"])
        native = next(r for r in rows if r["variant"] == "native" and (r["allocator"], r["shape"], r["pass"]) == same)
        assert row["ratio_to_native"] == pytest.approx(row["median_ms"] / native["median_ms"])
    assert bench.format_table(rows) in printed
    assert "| tuned | 4×3×5 | fwd+bwd |" in printed
    assert payload["format"] == bench.FORMAT == 2 and payload["my_bn"] == my_bn.__version__
    for row in rows:  # the spread beside each median
        assert row["iqr_ms"] >= 0 and len(row["round_ms"]) == bench.ROUNDS and isinstance(row["noisy"], bool)
        low, high = row["ratio_range"]
        assert low <= high and isinstance(row["warnings"], list)
        assert row["noisy"] or not row["warnings"]  # the Timer warns from 10% of the median, as noisy does
    assert "±" in printed and "too noisy to trust" in printed
    assert "At 16×3 (tuned allocator), a custom autograd.Function" in printed


def test_report_prints_a_saved_run_and_checks_the_file(measured, tmp_path, capsys):
    out, printed = measured
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- bench-table:start -->\nold\n<!-- bench-table:end -->\nb\n")
    assert bench.main(["--report", str(out), "--readme", str(readme)]) == 0
    report = capsys.readouterr().out
    assert report == bench.format_report(json.loads(out.read_text())) + "\n" and report in printed
    assert readme.read_text() == f"a\n<!-- bench-table:start -->\n{report}<!-- bench-table:end -->\nb\n"
    for bad in (tmp_path / "missing.json", readme):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--report", str(bad)])
        assert exc.value.code == 2 and "--report" in capsys.readouterr().err
    readme.write_text("no markers\n")  # refused before measuring, and left as it was
    with pytest.raises(SystemExit) as exc:
        bench.main(["--shapes", "16x3", "--no-train-loop", "--readme", str(readme)])
    assert exc.value.code == 2 and "--readme" in capsys.readouterr().err and readme.read_text() == "no markers\n"


def test_a_noisy_cell_is_marked_and_an_older_run_still_reports():
    row = {"device": "cpu", "allocator": "default", "shape": [64, 10], "pass": "fwd", "bound_ms": 1e-4,
           "fraction_of_bound": 0.01, "copy_bandwidth_GBs": 20.0, "warnings": [], "round_ms": [1.0] * 5}
    rows = [{**row, "variant": "native", "median_ms": 1.0, "iqr_ms": 0.02, "ratio_to_native": 1.0,
             "ratio_range": [1.0, 1.0], "noisy": False},
            {**row, "variant": "mybn", "median_ms": 2.0, "iqr_ms": 0.5, "ratio_to_native": 2.0,
             "ratio_range": [1.5, 2.5], "noisy": True}]
    table = bench.format_table(rows)
    assert "| default | 64×10 | fwd | 1 ±0.01 | 2 ±0.25 | 2.00 (1.50–2.50) ⚠ |" in table
    assert "1 cell(s) here" in table
    old = json.loads((ROOT / "results" / "bench_reference.json").read_text())  # format 1: medians only
    assert "format" not in old and "±" not in bench.format_report(old)


def test_reference_variant_is_timed_and_tabled(measured):
    """--reference times MyBN through the reference alone, and leaves my_bn.REFERENCE_ONLY as it was."""
    out, printed = measured
    assert my_bn.REFERENCE_ONLY is False
    rows = json.loads(out.read_text())["kernels"]
    assert {r["pass"] for r in rows if r["variant"] == "mybn_reference"} == {"fwd", "fwd+bwd"}
    assert "| default | 16×3 | fwd+bwd |" in printed.split("speed-up over the reference")[1]


def test_claims_about_the_fast_paths():
    """my_bn_fast's docstring, against the run it quotes (results/bench_reference.json)."""
    rows = json.loads((ROOT / "results" / "bench_reference.json").read_text())["kernels"]
    doc = " ".join(my_bn_fast.__doc__.split())
    assert "forward+backward 2.6 to 5 times faster at 8192×1024, 65536×512 and 256×128×256" in doc
    assert "the forward alone 3.5 to 10.5 times" in doc

    def speedups(name):
        times = {(r["allocator"], tuple(r["shape"]), r["variant"]): r["median_ms"] for r in rows if r["pass"] == name}
        return [t / times[a, s, "mybn"] for (a, s, v), t in times.items() if v == "mybn_reference" and s != (64, 10)]

    assert 2.55 <= min(speedups("fwd+bwd")) and max(speedups("fwd+bwd")) < 5.05
    assert 3.45 <= min(speedups("fwd")) and max(speedups("fwd")) < 10.55


def test_end_to_end_line_names_what_was_timed():
    """The end-to-end row of a run says which command it timed: the whole main command now, the main
    experiment alone in runs of an earlier bench.py (which carry no "command")."""
    rows = [{"what": "plain", "train_py_s": 1.0, "dataloader_s": 2.0}]
    now = bench.format_train_table([*rows, {"what": "experiment", "command": "all", "wall_s": 130.0}])
    before = bench.format_train_table([*rows, {"what": "experiment", "wall_s": 8.0}])
    assert now.endswith("main command without the install, `python train.py all` then `compare.py`: 130.0 s wall.")
    assert before.endswith(
        "`python train.py` (2 ranges × 3 nets × 5 seeds × 10 epochs), then `compare.py` for its figures: 8.0 s wall."
    )
