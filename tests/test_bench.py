"""bench.py runs, and prints what it measured; no timing is asserted here (speed lives in the benchmark)."""

import json

import pytest

import bench


def test_shapes_are_checked():
    assert bench.parse_shape("64x10") == (64, 10) and bench.parse_shape("2x3x4") == (2, 3, 4)
    for bad in ("64", "64xten", "1x10", "0x5", "1x3x1"):
        with pytest.raises(ValueError, match="--shapes"):
            bench.parse_shape(bad)


def test_bad_shape_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--shapes", "64x"])
    assert exc.value.code == 2 and "--shapes" in capsys.readouterr().err


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--shapes", "16x3", "4x3x5", "--no-compile", "--no-train-loop", "--allocator", "both",
            "--min-run-time", "0.01", "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    payload = json.loads(out.read_text())
    rows = payload["kernels"]
    keys = {(r["allocator"], tuple(r["shape"]), r["variant"], r["pass"]) for r in rows}
    assert keys == {
        (a, s, v, p) for a in ("default", "tuned") for s in ((16, 3), (4, 3, 5)) for v in ("native", "mybn")
        for p in ("fwd", "fwd+bwd")
    } | {(a, (16, 3), "floor", p) for a in ("default", "tuned") for p in ("fwd", "fwd+bwd")}  # fmt: skip
    for row in rows:
        assert row["median_ms"] > 0 and row["bound_ms"] > 0 and row["copy_bandwidth_GBs"] > 0
        assert row["fraction_of_bound"] == pytest.approx(row["bound_ms"] / row["median_ms"])
        same = (row["allocator"], row["shape"], row["pass"])
        native = next(r for r in rows if r["variant"] == "native" and (r["allocator"], r["shape"], r["pass"]) == same)
        assert row["ratio_to_native"] == pytest.approx(row["median_ms"] / native["median_ms"])
    assert bench.format_table(rows) in printed
    assert "| tuned | 4×3×5 | fwd+bwd |" in printed
    assert "At 16×3 (tuned allocator), a custom autograd.Function" in printed


def test_report_prints_a_saved_run_and_checks_the_file(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--shapes", "16x3", "--no-compile", "--no-train-loop", "--allocator", "default", "--min-run-time", "0.01"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    measured = capsys.readouterr().out
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- bench-table:start -->\nold\n<!-- bench-table:end -->\nb\n")
    assert bench.main(["--report", str(out), "--readme", str(readme)]) == 0
    assert capsys.readouterr().out == measured == bench.format_report(json.loads(out.read_text())) + "\n"
    assert readme.read_text() == f"a\n<!-- bench-table:start -->\n{measured}<!-- bench-table:end -->\nb\n"
    for bad in (tmp_path / "missing.json", readme):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--report", str(bad)])
        assert exc.value.code == 2 and "--report" in capsys.readouterr().err
    readme.write_text("no markers\n")  # refused before measuring, and left as it was
    with pytest.raises(SystemExit) as exc:
        bench.main([*argv, "--readme", str(readme)])
    assert exc.value.code == 2 and "--readme" in capsys.readouterr().err and readme.read_text() == "no markers\n"
