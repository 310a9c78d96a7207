"""compare.py: every figure and table drawn from saved results, pages made and filled, bad results
refused in one line; and the registry of experiments, which it reads (one record per experiment)."""

import importlib
import json
import shutil

import pytest

import compare
import train
from experiments import EXPERIMENTS
from experiments.record import Experiment
from helpers import PNG_MAGIC, ROOT, broken_links
from lab.settings import Settings

# ---------------------------------------------------------------------------------------------- compare.py


EXPLANATION_TABLES = [
    "ics-table",
    "noisy-table",
    "running-stats-table",
    "lr-table",
    "landscape-table",
    "verdict-summary",
    "verdict-table",
    "mnist-table",
    "mnist-diagnostics-table",
    "conv-batch-table",
    "conv-precise-table",
    "conv-budget-table",
    "conv-gap-table",
    "conv-lr-table",
    "conv-noniid-table",
    "depth-table",
    "scale-table",
    "only-bn-table",
    "residual-init-table",
    "residual-table",
]


def readme_with_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- results-table:start -->\nstale table\n<!-- results-table:end -->\nmiddle\n"
        "<!-- parity-table:start -->\nstale table\n<!-- parity-table:end -->\n"
        "<!-- controls-table:start -->\nstale table\n<!-- controls-table:end -->\n"
        "<!-- sweep-table:start -->\nstale table\n<!-- sweep-table:end -->\n"
        "<!-- saturation-table:start -->\nstale table\n<!-- saturation-table:end -->\n"
        "<!-- ddp-table:start -->\nstale table\n<!-- ddp-table:end -->\n"
        + "".join(f"<!-- {name}:start -->\nstale table\n<!-- {name}:end -->\n" for name in EXPLANATION_TABLES)
        + "end\n"
    )
    return readme


def test_compare_writes_every_figure_page_and_table(tiny_results, tmp_path):
    """With a docs folder: every figure drawn, the verdicts' forest plot among them; each experiment's page
    made (its docstring, figures and tables), the verdicts' page (every row whole) and the page that lists
    the experiments; the README's list of experiments and verdict table; every link of them resolves."""
    docs, pictures, readme = tmp_path / "docs", tmp_path / "picture", tmp_path / "README.md"
    markers = ("experiments-list", "verdict-summary")
    readme.write_text("intro\n" + "".join(f"<!-- {m}:start -->\nstale\n<!-- {m}:end -->\n" for m in markers) + "end\n")
    argv = ["--results", str(tiny_results), "--pictures", str(pictures), "--docs", str(docs), "--readme", str(readme)]
    assert compare.main(argv) == 0
    per_range = {f"{kind}_r{r}.png" for kind in ("data", "loss_fit", "diagnostics") for r in (1, 5)}
    expected = per_range | {"percentiles.png", "parity.png", "controls.png", "sweep.png", "ddp.png"}
    expected |= {"ics.png", "noisy.png", "running_stats.png", "lr.png", "landscape.png", "landscape_settings.png",
                 "mnist.png", "conv.png", "conv_budgets.png", "depth.png", "scale.png", "only_bn.png", "verdicts.png",
                 "residual.png", "residual_init.png"}
    assert {p.name for p in pictures.iterdir()} == expected
    for p in pictures.iterdir():
        assert p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 10_000
    pages = {p.stem: p.read_text() for p in docs.glob("*.md")}
    assert set(pages) == {*EXPERIMENTS, "verdicts", "runs"}
    assert "](../picture/verdicts.png)" in pages["verdicts"] and "### Internal covariate shift" in pages["verdicts"]
    assert "| [ics](ics.md) | " in pages["runs"]
    assert pages["ics"].startswith("# ics\n\nics: internal covariate shift")
    assert "<!-- ics-table:start -->\n" in pages["ics"] and "| inputs | net |" in pages["ics"]
    assert "](../picture/ics.png)" in pages["ics"] and "| (-5, 5) | MyBN |" in pages["main"]
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "[ics](docs/ics.md) · " in text and "| [Internal covariate shift" in text
    for page in [readme, *docs.glob("*.md")]:
        assert broken_links(page) == [], page
    assert not list(tmp_path.glob(".*")) and not list(pictures.glob(".*")), "temporary files left behind"


def test_without_docs_every_table_goes_into_the_readme(tiny_results, tmp_path):
    """--readme alone: every experiment's tables and the verdict table between the README's markers."""
    readme = readme_with_markers(tmp_path)
    experiments = compare.load_experiments(tiny_results)
    new = compare.texts(compare.tables(experiments), readme, None, tmp_path / "pics", compare.figures(experiments))
    assert list(new) == [readme]
    text = new[readme]
    assert "stale table" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| (-5, 5) | MyBN |" in text and "| (-1, 1) | float64 |" in text
    assert "| plain, targets standardised |" in text and "| 5 | 0.0" in text and "| [Internal covariate" in text
    assert "### Internal covariate shift" in text  # every row whole too


def test_compare_without_results_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["--results", str(tmp_path / "nothing"), "--pictures", str(tmp_path / "p")])
    assert exc.value.code == 2
    assert f"no results in {tmp_path / 'nothing'}/" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_compare_interrupted_leaves_pictures_as_they_were(tmp_path):
    pictures = tmp_path / "picture"
    pictures.mkdir()
    (pictures / "a.png").write_bytes(b"old")

    def interrupted(out):
        raise KeyboardInterrupt

    todo = {"a.png": lambda out: out.write_bytes(b"new"), "b.png": interrupted}
    with pytest.raises(KeyboardInterrupt):
        compare.write_pictures(todo, pictures)
    assert [p.name for p in pictures.iterdir()] == ["a.png"] and (pictures / "a.png").read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [pictures]


def test_replace_between_markers_needs_its_markers():
    with pytest.raises(ValueError, match="needs exactly one"):
        compare.replace_between_markers("no markers", "results-table", "x")


# ---------------------------------------------------------------------------------------------- the registry


def test_every_experiment_is_one_record_named_as_its_module():
    for name, experiment in EXPERIMENTS.items():
        assert isinstance(experiment, Experiment) and experiment.name == name, name
        assert issubclass(experiment.settings, Settings) and experiment.settings().problem() is None, name
        assert set(experiment.needs) < set(EXPERIMENTS), name
        module = ROOT / "experiments" / f"{name}.py"  # a module, or a package of its own
        assert (module.exists() or (module.with_suffix("") / "__init__.py").exists()) and experiment.doc.strip(), name


TOY = '''"""toy: a new experiment, the usual nets on one range, and one number of its own."""

from functools import partial

from experiments.record import Experiment
from lab.regression import Regression, run_experiment


def run(config, log):  # its own measurement: the usual runs, and one number of its own on top
    results = run_experiment(config, log)
    return {**results, "largest_final_mse": max(run["test_mse"][-1] for run in results["runs"])}


def draw(results, out):
    out.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n")


EXPERIMENT = Experiment(
    name="toy",
    doc=__doc__,
    settings=Regression.preset("ToySettings", __name__, ranges=[2.0], models=["plain"], diagnostics=False),
    run=run,
    figures=lambda results: {"toy.png": partial(draw, results)},
    tables=lambda results: {"toy-table": f"largest: {results['largest_final_mse']:.3g}"},
)
'''


def test_adding_an_experiment_is_one_module_and_its_registry_entry(monkeypatch, tmp_path, capsys):
    """A new experiment: its module, and its record in the registry. train.py lists it, shows its help,
    runs it with its own preset and training, and prints its summary; compare.py draws its figure and
    makes its page with its table."""
    (tmp_path / "toy.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy")
    monkeypatch.setitem(EXPERIMENTS, "toy", toy.EXPERIMENT)  # its entry (experiments/__init__.py: and its import)
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "  toy " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(["toy", "--help"])
    assert "a new experiment, the usual nets on one range" in capsys.readouterr().out
    out = tmp_path / "results"
    assert train.main(["toy", "--seeds", "0", "--epochs", "1", "--out", str(out)]) == 0
    assert "final test MSE" in capsys.readouterr().out  # the default summary
    saved = json.loads((out / "toy" / "results.json").read_text())
    assert saved["experiment"] == "toy" and saved["config"]["ranges"] == [2.0] and "largest_final_mse" in saved
    docs, pictures = tmp_path / "docs", tmp_path / "pics"
    assert compare.main(["--results", str(out), "--pictures", str(pictures), "--docs", str(docs), "--readme", ""]) == 0
    assert (pictures / "toy.png").read_bytes() == PNG_MAGIC
    page = (docs / "toy.md").read_text()
    assert page.startswith("# toy\n\ntoy: a new experiment") and "![toy.png](../pics/toy.png)" in page
    assert f"<!-- toy-table:start -->\nlargest: {saved['largest_final_mse']:.3g}\n<!-- toy-table:end -->" in page
    (docs / "toy.md").write_text(page.replace("# toy\n", "Prose of its own.\n\n# toy\n"))
    assert compare.main(["--results", str(out), "--pictures", str(pictures), "--docs", str(docs), "--readme", ""]) == 0
    assert (docs / "toy.md").read_text().startswith("Prose of its own.")  # kept: only the tables are rewritten


BAD_RESULTS = {  # what an earlier version, or a hand edit, may leave in results.json
    "a run without predictions": lambda res: res["runs"][0].pop("predictions"),
    "a dataset without noise_std": lambda res: res["datasets"][0].pop("noise_std"),
    "a scalar range": lambda res: res["runs"][1].update(range=5.0),
    "an unknown model": lambda res: res["runs"][2].update(model="resnet"),
    "no runs": lambda res: res.update(runs=[]),
    "runs not a list": lambda res: res.update(runs=5),
    "empty diagnostics": lambda res: res["runs"][0].update(diagnostics={}),
    "predictions of another length": lambda res: res["runs"][0]["predictions"].pop(),
    "a run without its dataset": lambda res: res["runs"][0].update(seed=99),
    "config without seeds": lambda res: res["config"].pop("seeds"),
    "not an object": lambda res: res.clear(),
    "an earlier format": lambda res: res.pop("format"),
    "a newer format": lambda res: res.update(format=res["format"] + 1),
    "a seed past 2**64 in the config": lambda res: res["config"]["seeds"].__setitem__(0, 2**70),
    "a seed past 2**64 in a run": lambda res: res["runs"][3].update(seed=2**70),
    "a string in the diagnostics": lambda res: res["runs"][1]["diagnostics"]["saturation"][2].__setitem__(1, "x"),
    "a ragged list": lambda res: res["runs"][1]["diagnostics"]["unit_q"][0].append([1.0]),
    "a run shorter than the others": lambda res: res["runs"][4]["test_mse"].pop(),
    "a negative epoch count": lambda res: res["config"].update(epochs=-2),
    "an unknown setting": lambda res: res["config"].update(colour="red"),
    "a boolean where a number goes": lambda res: res["runs"][0]["train_loss"].__setitem__(0, True),
    "a seed given twice": lambda res: res["config"].update(seeds=[res["config"]["seeds"][0]] * 2),
    "a run recorded twice": lambda res: res["runs"].append(json.loads(json.dumps(res["runs"][0]))),
    "more epochs than the curves hold": lambda res: res["config"].update(epochs=res["config"]["epochs"] + 4),
    "a negative test MSE": lambda res: res["runs"][0]["test_mse"].__setitem__(1, -5.0),
}
FORMAT_MESSAGES = {  # what the one line must say, beside the file's name
    "an earlier format": "written by an earlier version",
    "a newer format": "written by a newer version",
    "a seed past 2**64 in the config": "config: 'seeds': expected an integer from 0 to 2**64 - 1",
    "a seed past 2**64 in a run": "runs[3].seed: expected a generator seed",
    "a string in the diagnostics": "runs[1].diagnostics.saturation[2][1]: expected a number, got 'x'",
    "a ragged list": "runs[1].diagnostics.unit_q: a ragged list",
    "a run shorter than the others": "runs[4].test_mse: 2 items, where the first record has 3",
    "a negative epoch count": "config: 'epochs': expected a positive integer, got '-2'",
    "an unknown setting": "config: unknown setting 'colour'",
    "a boolean where a number goes": "runs[0].train_loss[0]: expected a number, got True",
    "a seed given twice": "config: 'seeds' names a seed twice",
    "a run recorded twice": "is runs[0] again: a run recorded twice",
    "more epochs than the curves hold": "epochs give",
    "a negative test MSE": "runs[0].test_mse: -5.0 is not a possible value",
}


OTHER_BAD_RESULTS = {  # experiment -> what its figures need beyond the format, taken away
    "controls without diagnostics": ("controls", lambda res: [run.pop("diagnostics") for run in res["runs"]]),
    "a sweep without --noise-scaled": ("sweep", lambda res: res["config"].update(noise_scaled=None)),
    "float64 runs of other lengths": ("float64", lambda res: res["runs"][0]["train_loss"].pop()),
}


@pytest.mark.parametrize("name", [*BAD_RESULTS, *OTHER_BAD_RESULTS, "--pictures is a file"])
def test_compare_refuses_bad_results_in_one_line(name, tiny_results, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(tiny_results, results)
    pictures, readme = tmp_path / "pics", readme_with_markers(tmp_path)
    pictures.mkdir()
    (pictures / "old.png").write_bytes(b"old")
    before = readme.read_text()
    argv = ["--results", str(results), "--pictures", str(pictures), "--readme", str(readme)]
    if name == "--pictures is a file":
        argv[3] = str(readme)
    else:
        experiment, change = OTHER_BAD_RESULTS.get(name, ("", BAD_RESULTS.get(name)))
        path = results / experiment / "results.json"
        res = json.loads(path.read_text())
        change(res)
        path.write_text(json.dumps(res))
    with pytest.raises(SystemExit) as exc:
        compare.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note:")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert FORMAT_MESSAGES.get(name, "") in err and ("rerun train.py" in err or name != "an earlier format"), err
    assert name == "--pictures is a file" or str(path) in err, err
    assert readme.read_text() == before and [p.name for p in pictures.iterdir()] == ["old.png"]


def test_an_experiments_folder_is_not_taken_for_the_main_results(tiny_results, tmp_path, capsys):
    """--results OUT/ics held the ics file where main's goes: it was drawn as the main experiment, into
    OUT/ics/picture/. Now refused in one line, nothing written; and the tables cite the file they read."""
    results = tmp_path / "results"
    shutil.copytree(tiny_results, results)
    with pytest.raises(SystemExit):
        compare.main(["--results", str(results / "ics")])
    assert "holds the ics experiment's results, not the main experiment's" in capsys.readouterr().err
    assert not (results / "ics" / "picture").exists() and not (results / "ics" / "tables.md").exists()
    assert compare.main(["--results", str(results)]) == 0
    assert f"`{(results / 'ics' / 'results.json').as_posix()}`" in (results / "tables.md").read_text()
