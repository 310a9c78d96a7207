"""Living with the scripts: a configuration of one's own never touches the committed record, the help
shows each experiment's preset, a run says how far it is, and its summary never prints a NaN."""

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench
import compare
import train
from experiments import EXPERIMENTS
from helpers import ROOT
from lab import progress
from lab.regression import format_table, summarize
from lab.results import load_results
from lab.settings import Settings

ONE_RUN = ["--ranges", "1", "--models", "plain", "--seeds", "0", "--epochs", "1"]


# ---------------------------------------------------------------------------------------------- the committed record


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_a_preset_is_a_preset_and_a_changed_setting_is_named(name):
    experiment = EXPERIMENTS[name]
    preset = dataclasses.asdict(experiment.preset_config())
    assert experiment.off_preset(preset) == []
    assert experiment.off_preset({**preset, "workers": 7, "out": "elsewhere"}) == []  # they change no result
    if "epochs" in preset:  # not depth's, which trains nothing
        assert experiment.off_preset({**preset, "epochs": preset["epochs"] + 1}) == [f"--epochs {preset['epochs'] + 1}"]
    assert experiment.off_preset({**preset, "seeds": [7, 8]}) == ["--seeds 7 8"]
    assert experiment.off_preset({**preset, "device": "cpu"}) == [] or preset["device"] == "auto"  # auto: the CPU here


def test_the_committed_results_are_the_presets_runs():
    for experiment in EXPERIMENTS.values():
        path = experiment.results_path(ROOT / "results")
        assert experiment.off_preset(json.loads(path.read_text())["config"]) == [], path


def test_where_results_go():
    assert {name: c.out for name, c in train.parse_config(["all"]).items()} == dict.fromkeys(EXPERIMENTS, "results")
    assert train.parse_config(["lr", "--workers", "1"])["lr"].out == "results"
    assert train.parse_config(["lr", "--seeds", "5", "6"])["lr"].out == "runs"
    assert train.parse_config(["lr", "--seeds", "5", "--out", "mine"])["lr"].out == "mine"
    configs = train.parse_config(["all", "--seeds", "0", "1"])  # the preset of some, not of others
    assert configs["ddp"].out == "results" and configs["main"].out == "runs"


def test_a_trial_cannot_be_written_into_the_committed_results(capsys):
    for out in (ROOT / "results", ROOT / "results" / "long"):
        with pytest.raises(SystemExit) as exc:
            train.parse_config(["--epochs", "2", "--out", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert "results/ holds the experiments' own presets only" in err and "--epochs 2" in err


def test_a_trial_goes_to_runs_and_is_drawn_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.main(ONE_RUN) == 0
    err = capsys.readouterr().err
    assert "note: main with --seeds 0, --ranges 1.0, --models plain, --epochs 1 is not its preset" in err
    assert (tmp_path / "runs" / "results.json").exists() and not (tmp_path / "results").exists()
    assert compare.main(["--results", "runs"]) == 0
    assert (tmp_path / "runs" / "picture" / "loss_fit_r1.png").exists()
    tables = (tmp_path / "runs" / "tables.md").read_text()
    assert tables.startswith("# Tables of the results in runs/") and "`runs/results.json`" in tables
    assert "## results-table" in tables


def test_compare_draws_only_presets_into_the_committed_figures_and_readme(tmp_path, capsys):
    out = tmp_path / "mine"
    assert train.main([*ONE_RUN, "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "picture").iterdir()}
    for target in (["--pictures", str(ROOT / "picture"), "--readme", ""],
                   ["--pictures", str(tmp_path / "p"), "--readme", str(ROOT / "README.md")]):
        with pytest.raises(SystemExit) as exc:
            compare.main(["--results", str(out), *target])
        error = capsys.readouterr().err.splitlines()[-1]  # after a note per experiment not there
        assert exc.value.code == 2 and error.startswith("__main__.py: error: ") or error.startswith("compare.py")
        assert f"{out}/results.json is not the main preset's run (--seeds 0, --ranges 1.0" in error
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "picture").iterdir()} == before


def _digest(folder: Path) -> dict[str, str]:
    record = [folder / "README.md", *sorted((folder / "results").rglob("*")), *sorted((folder / "picture").rglob("*"))]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in record if p.is_file()}


def test_in_a_clone_a_trial_and_compare_leave_the_committed_record_as_it_is(tmp_path):
    """The README's own example of a configuration of one's own, in a copy of the repository:
    ``train.py`` with other settings, then ``compare.py`` with none; the committed results,
    figures and README come out byte for byte as they were, and the trial's figures are in runs/."""
    clone = tmp_path / "clone"
    skip = shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", ".*cache*", ".hypothesis")
    shutil.copytree(ROOT, clone, ignore=skip)
    before = _digest(clone)
    for command in (["train.py", *ONE_RUN], ["compare.py"]):
        done = subprocess.run([sys.executable, *command], cwd=clone, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert _digest(clone) == before
    assert (clone / "runs" / "picture" / "loss_fit_r1.png").exists() and (clone / "runs" / "tables.md").exists()
    assert "the tables into runs/tables.md" in done.stdout
    assert done.stdout.splitlines()[-1] == ("Your own runs: their figures are in runs/picture/, their tables in "
                                            "runs/tables.md.")


# ---------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_an_experiments_help_shows_its_preset(name, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main([name, "--help"])
    shown = capsys.readouterr().out
    assert exc.value.code == 0
    assert f"the {name} experiment (experiments/{name}.py)" in shown
    preset = EXPERIMENTS[name].preset_config()
    seeds = " ".join(map(str, preset.seeds))
    assert f"({name}: {seeds})" in " ".join(shown.split())
    for setting, (value, why) in EXPERIMENTS[name].settings.ONLY.items():
        assert f"({name}: {value} only, {why})" in " ".join(shown.split()), setting
    assert " ".join(EXPERIMENTS[name].doc.split()[:6]) in " ".join(shown.split())


def test_the_general_help_lists_every_experiment_and_hides_internal_flags(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    shown = capsys.readouterr().out
    listed = shown.split("experiments (`train.py NAME --help` shows one's settings, its own flags among them):")[1]
    assert [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line[2] != " "] == list(
        EXPERIMENTS
    )
    assert "(default: results/ for an experiment's own preset, runs/ for any other configuration)" in " ".join(
        shown.split()
    )
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    assert "--child" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- summaries


def test_a_diverged_seed_is_counted_apart_not_averaged_into_nan():
    results = {
        "datasets": [{"range": [-1, 1], "noise_std": 0.1}],
        "runs": [{"range": [-1, 1], "model": "plain", "test_mse": [1.0, v]} for v in (0.5, 0.7, float("nan"))]
        + [{"range": [-1, 1], "model": "my_bn", "test_mse": [1.0, float("inf")]}],
    }
    table = format_table(summarize(results))
    assert "nan" not in table.lower() and "inf" not in table.lower()
    plain, my_bn = table.splitlines()[1:]
    assert "0.6 ± 0.14" in plain and plain.endswith("(1 of 3 diverged)")
    assert "diverged" in my_bn and "±" not in my_bn


def test_the_lr_summary_is_per_grid_and_has_no_nan(tmp_path, capsys):
    argv = ["lr", "--ranges", "5", "--seeds", "0", "--epochs", "2", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower()
    assert "2 epochs, 1 seed(s) per learning rate" in printed and "largest lr that trains" in printed
    rows = [line for line in printed.splitlines() if line.startswith("(-5, 5)")]
    assert len(rows) == 4 and all(line.rstrip().endswith("of 6") for line in rows)  # 2 nets x 2 optimizers
    assert load_results(tmp_path / "lr" / "results.json")["environment"]["my_bn"]


# ---------------------------------------------------------------------------------------------- progress


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_plain_lines_with_the_time_left_at_most_every_ten_seconds():
    clock, stream = Clock(), io.StringIO()
    shown = progress.Progress("main", stream=stream, terminal=False, clock=clock)
    shown.expect(4)
    assert stream.getvalue() == ""  # nothing before the first run ends
    clock.now += 10
    shown.advance()
    assert stream.getvalue() == "main: 1/4 runs, 00:10 so far, about 00:30 left\n"
    clock.now += 5
    shown.advance()  # 5 s after the last line: none
    assert stream.getvalue().count("\n") == 1 and shown.left_s() == pytest.approx(15.0)
    clock.now += 5
    shown.advance()
    clock.now += 1
    shown.advance()  # the last: always
    assert stream.getvalue().splitlines()[1:] == ["main: 3/4 runs, 00:20 so far, about 00:06 left",
                                                  "main: 4/4 runs, done in 00:21"]


def test_no_estimate_before_a_quarter_of_the_runs_have_ended():
    """The first of 40 runs ended after 10 s: 40 × 10 s would be a guess (runs differ in cost), so none."""
    clock, stream = Clock(), io.StringIO()
    shown = progress.Progress("conv", stream=stream, terminal=False, clock=clock)
    shown.expect(40)
    clock.now += 10
    shown.advance()
    assert stream.getvalue() == "conv: 1/40 runs, 00:10 so far\n" and shown.left_s() is None
    shown.advance(9)
    assert shown.left_s() == pytest.approx(30.0)  # 10 of 40 ended: 10 s for 10, 30 s for the other 30


def test_a_plan_sets_the_total_of_runs_started_in_rounds():
    shown = progress.Progress("landscape", stream=io.StringIO(), terminal=False, clock=Clock())
    shown.plan(30)
    shown.expect(15)
    assert shown.runs == 30
    shown.expect(15)
    assert shown.runs == 30


def test_a_terminal_gets_a_bar_and_quiet_gets_nothing():
    stream = io.StringIO()
    shown = progress.Progress("lr", stream=stream, terminal=True)
    with progress.tracking(shown):
        progress.current().expect(3)
        assert list(progress.counted(map)(abs, [-1, -2, -3])) == [1, 2, 3]  # counted as each is yielded
    assert progress.current() is not shown  # tracking ended
    assert "lr: 100%" in stream.getvalue() and "3/3" in stream.getvalue()
    quiet = io.StringIO()
    with progress.tracking(progress.Progress("lr", stream=quiet, quiet=True, terminal=True)):
        progress.current().expect(2)
        list(progress.counted(map)(abs, [-1, -2]))
    assert quiet.getvalue() == ""


def test_train_shows_progress_and_quiet_leaves_the_summary(tmp_path, capsys):
    assert train.main([*ONE_RUN, "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "main: 1/1 runs, done in" in err and "range (-1, 1)  plain" in out
    assert train.main([*ONE_RUN, "--out", str(tmp_path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "runs" not in err and "range (-1, 1)  plain " not in out
    assert "final test MSE" in out and f"wrote {tmp_path}" in out


def test_a_config_records_where_it_was_written(tmp_path):
    assert train.main([*ONE_RUN, "--out", str(tmp_path)]) == 0
    assert load_results(tmp_path / "results.json")["config"]["out"] == str(tmp_path)
    assert Settings().out is None  # chosen by train.py: results/ for a preset, runs/ otherwise


def test_a_second_train_py_writing_the_same_results_is_refused(tmp_path, capsys):
    """Two runs with one --out both printed "wrote ..." and one result was lost: now the second is refused
    before it trains, while the first holds its results file (the lock of another process, or of this one)."""
    argv = [*ONE_RUN, "--out", str(tmp_path)]
    configs, _ = train.parse_args(argv)
    with train.writing_alone(configs), pytest.raises(SystemExit) as refused:
        train.main(argv)
    assert "another train.py is writing" in str(refused.value) and not any(tmp_path.iterdir())
    assert train.main(argv) == 0  # once the first has ended
    assert train.main([*ONE_RUN, "--out", str(tmp_path / "other")]) == 0  # another --out: never in the way
