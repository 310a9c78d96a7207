"""bench.py runs, and prints what it measured; no timing is asserted here (speed lives in the benchmark)."""

import contextlib
import io
import json
import math

import pytest

import bench
import my_bn
from helpers import DOCS, ROOT
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


BENCH = ROOT / "results" / "bench.json"
BENCH_CUDA = ROOT / "results" / "bench_cuda.json"
LARGE = ((8192, 1024), (65536, 512), (256, 128, 256))


def _bench(path=BENCH):
    payload = json.loads(path.read_text())
    rows = {(r["allocator"], tuple(r["shape"]), r["variant"], r["pass"]): r for r in payload["kernels"]}
    return payload, rows


def test_readme_bench_tables_are_the_code_output():
    for path in (BENCH, BENCH_CUDA):
        assert bench.format_report(_bench(path)[0]) in DOCS["speed"], path


def test_claims_about_speed():
    payload, rows = _bench()
    _, rerun = _bench(ROOT / "results" / "bench_rerun.json")

    def ratio(*key):
        return rows[key]["ratio_to_native"]

    def bound(*key):
        return rows[key]["fraction_of_bound"]

    allocators = ("default", "tuned")
    nc = [s for s in LARGE if len(s) == 2]
    # how far to trust it: the rerun against this run's spreads; the cells whose rounds agree on a side
    mine = [key for key in rows if key[2] != "native"]
    inside = [k for k in mine if rows[k]["ratio_range"][0] <= rerun[k]["ratio_to_native"] <= rows[k]["ratio_range"][1]]
    assert (len(inside), len(mine)) == (35, 44)
    close = [k for k, r in rows.items() if abs(rerun[k]["median_ms"] - r["median_ms"]) <= r["iqr_ms"]]
    assert (len(close), len(rows)) == (51, 64)
    decided = [k for k in mine if k[2] in ("mybn", "mybn_cpp") and not (rows[k]["ratio_range"][0] <= 1
                                                                        <= rows[k]["ratio_range"][1])]
    assert len(decided) == 23
    assert all((rows[k]["ratio_to_native"] < 1) == (rerun[k]["ratio_to_native"] < 1) for k in decided)
    assert sum(r["noisy"] for k, r in rows.items() if k[2] != "native") > len(mine) / 2  # "most cells"
    # (64, 10): the Python backend about twice native, the function floor most of native; C++ level within noise
    python = [round(ratio(a, (64, 10), "mybn", "fwd+bwd"), 1) for a in allocators]
    assert python == [1.8, 2.2]
    for allocator in allocators:
        assert 0.5 < ratio(allocator, (64, 10), "floor", "fwd+bwd") < 1
        for name in ("fwd", "fwd+bwd"):
            low, high = rows[allocator, (64, 10), "mybn_cpp", name]["ratio_range"]
            assert low <= 1 <= high
    # large inputs, C++, tuned: about half of native on (N, C, L); 0.86x and 0.82x on (N, C), under the bound
    assert 0.45 <= ratio("tuned", (256, 128, 256), "mybn_cpp", "fwd+bwd") <= 0.55
    assert [round(ratio("tuned", s, "mybn_cpp", "fwd+bwd"), 2) for s in nc] == [0.86, 0.82]
    assert all(bound("tuned", s, v, "fwd+bwd") < 0.5 for s in nc for v in ("native", "mybn_cpp"))
    assert "AVX2" in payload["machine"]  # no non-temporal stores (AVX-512 only)
    # default allocator: page faults, the bound a fifth of everyone's time or less
    for shape in LARGE:
        assert all(bound("default", shape, v, "fwd+bwd") <= 1 / 5 for v in ("native", "mybn", "mybn_cpp"))
    # large inputs, Python: within 1.25x of native by default, about 1.5x on (N, C) when tuned
    assert all(ratio("default", s, "mybn", "fwd+bwd") <= 1.25 for s in LARGE)
    assert all(1.3 <= ratio("tuned", s, "mybn", "fwd+bwd") <= 1.6 for s in nc)
    # the training loop: 3 to 8 times the DataLoader loop; C++ 1.13x torch_bn, Python over 1.6x
    training = {row["what"]: row for row in payload["training"] if "train_py_s" in row}
    speedups = {m: row["dataloader_s"] / row["train_py_s"] for m, row in training.items()}
    assert set(speedups) == {"plain", "torch_bn", "my_bn", "my_bn_cpp"}
    assert 3 < min(speedups.values()) and max(speedups.values()) < 8
    seconds = {m: row["train_py_s"] for m, row in training.items()}
    assert round(seconds["my_bn_cpp"] / seconds["torch_bn"], 2) == 1.13 and seconds["my_bn"] > 1.6 * seconds["torch_bn"]
    # the default backend: the main experiment a little faster with C++, by less than the first build costs
    main = {row["backend"]: row["wall_s"] for row in payload["training"] if row["what"] == "main"}
    build = next(row["wall_s"] for row in payload["training"] if row["what"] == "build")
    assert 0 < main["python"] - main["cpp"] < build


def test_compiled_was_retired_on_measurements():
    """README, Speed: in the run that retired compiled=True, the C++ backend's forward+backward took at most
    its time at every shape and allocator, and its forward alone was slower only on (N, C, L), tuned."""
    _payload, rows = _bench(ROOT / "results" / "bench_compiled.json")
    cells = {key[:2] + key[3:] for key in rows}
    slower = {
        (a, s, p)
        for a, s, p in cells
        if rows[a, s, "mybn_cpp", p]["median_ms"] > rows[a, s, "mybn_compiled", p]["median_ms"]
    }
    assert slower == {("tuned", (256, 128, 256), "fwd")}


def test_claims_about_speed_on_a_gpu():
    payload, rows = _bench(BENCH_CUDA)
    assert "H200" in payload["machine"] and "torch 2.11" in payload["machine"]
    assert {r["device"] for r in payload["kernels"]} == {"cuda"}
    mybn = [r for r in payload["kernels"] if r["variant"] == "mybn"]
    assert all(2.4 <= r["ratio_to_native"] <= 5 for r in mybn)  # every size
    assert max(r["fraction_of_bound"] for r in mybn) <= 1 / 8
    shapes = {tuple(r["shape"]) for r in mybn}

    def fwd_bwd(shape, variant):
        return rows["default", shape, variant, "fwd+bwd"]["median_ms"]

    faster = {s for s in shapes if fwd_bwd(s, "mybn_compiled") < fwd_bwd(s, "mybn")}
    assert faster == {max(shapes, key=lambda s: math.prod(s))}  # the largest input only
