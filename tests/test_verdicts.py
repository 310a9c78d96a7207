"""verdicts.py: the verdicts rerun on seeds of one's own, beside the committed ones; a flip between
"holds" and "does not hold" is told apart from a move to or from "not decided"."""

import shutil

import pytest

import experiments
import verdicts


@pytest.mark.parametrize(
    ("committed", "rerun", "flip"),
    [
        ("holds", "holds", False),
        ("holds", "not decided", False),
        ("not decided", "does not hold", False),
        ("holds", "does not hold", True),
        ("does not hold", "holds", True),
        ("no", "yes", True),  # a fact part
        ("holds", "—", False),  # a part the rerun lacks: shown, not a flip
    ],
)
def test_a_flip_is_a_move_between_holds_and_does_not_hold(committed, rerun, flip):
    assert verdicts.flipped(committed, rerun) is flip


def test_the_comparison_is_part_by_part():
    part = {"row": "r", "part": "a", "budget": "4 epochs", "evaluation": "", "answer": "holds"}
    table = verdicts.comparison([part, {**part, "part": "b"}], [{**part, "answer": "does not hold"}], "heading")
    lines = table.splitlines()
    assert lines[0] == "heading" and lines[-2] == "| r | a, 4 epochs | holds | does not hold | **yes** |"
    assert lines[-1] == "| r | b, 4 epochs | holds | — | no |"


def test_the_comparison_of_tiny_runs(tiny_results, tmp_path, capsys):
    out = tmp_path / "verdicts"
    shutil.copytree(tiny_results, out)
    assert verdicts.main(["--out", str(out), "--no-train"]) == 0  # what is there: the tiny runs' seeds 0 and 1
    printed = capsys.readouterr().out
    table = (out / "verdicts.md").read_text()
    committed = verdicts.what_ran(verdicts.ROOT / "results")[1]
    assert table.startswith(f"Verdicts committed ({committed}) and rerun (seeds 0 1, ") and table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    parts = experiments.read_verdicts(verdicts.ROOT / "results")
    assert len(rows) == len(parts)  # one line per committed part
    assert (out / experiments.VERDICTS_FILE).exists()  # the rerun's parts, as data


@pytest.mark.parametrize("seeds", [["7"], ["7", "8"], ["7", "7", "8"]])
def test_fewer_than_three_seeds_are_refused_in_one_line(seeds, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        verdicts.main(["--seeds", *seeds, "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "at least 3 different seeds" in err
    assert not (tmp_path / "v").exists()


def test_without_results_it_says_so_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        verdicts.main(["--out", str(tmp_path / "empty"), "--no-train"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "no results in" in err


def test_rounding_reruns_the_committed_seeds_under_the_other_numerics(tiny_results, tmp_path, monkeypatch):
    """--rounding: each deciding experiment's preset, seeds included, by train.py in a process of its own whose
    numerics are the other policy than the committed record's."""
    calls = []
    monkeypatch.setattr(verdicts.subprocess, "run", lambda cmd, env: calls.append((cmd, env)) or Completed())
    out = tmp_path / "rounding"
    shutil.copytree(tiny_results, out)
    assert verdicts.main(["--rounding", "--out", str(out)]) == 0
    committed = verdicts.what_ran(verdicts.ROOT / "results")[0]
    assert [cmd[2] for cmd, _ in calls] == verdicts.deciding()
    assert all("--seeds" not in cmd and cmd[-3:] == ["--out", str(out), "--quiet"] for cmd, _ in calls)
    other = "native" if committed == "portable" else "portable"
    assert all(env == verdicts.numerics.environment_for(other) for _, env in calls)
    assert {env["BN_NUMERICS"] for _, env in calls} == {other}


class Completed:
    returncode = 0


@pytest.mark.parametrize("out", ["results", "results/rerun", "."])
def test_the_committed_folder_is_refused_as_scratch(out, capsys):
    with pytest.raises(SystemExit) as exc:
        verdicts.main(["--out", out, "--no-train"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "outside the committed results/" in err
