"""lab/tidy.py: the results as long-format CSVs, on a record with known rows; and the committed CSVs are
what compare.py writes, read by pandas as docs/data.md says."""

from __future__ import annotations

import re

import pandas as pd

from experiments import EXPERIMENTS, TIDY_FILE, VERDICTS_CSV, load_experiments, read_verdicts, tidy_data
from experiments.conv import interval
from helpers import DOCS, ROOT
from lab.tidy import COLUMNS, tidy_rows, to_csv


def test_a_record_flattens_to_known_rows():
    results = {"runs": [{"range": [-5.0, 5.0], "model": "my_bn", "seed": 3, "test_mse": [2.0, 1.5],
                         "train_loss": [9.0, 8.0, 7.0], "predictions": [0.1], "test_items": "AAA",
                         "probe": {"step": [0, 10], "loss": [4.0, 3.0], "norm": [[1.0, 2.0], [1.5, 2.5]]},
                         "diverged": False, "cos": None}],
               "longer": {"30": [{"range": [-5.0, 5.0], "model": "plain", "seed": 3, "test_acc": 0.25}]}}
    text = to_csv(tidy_rows("toy", results, lambda run: "grid"), COLUMNS)
    assert text.splitlines() == [
        "experiment,part,range,budget,net,seed,axis,index,metric,value",
        "toy,grid,5.0,,my_bn,3,epoch,0,test_mse,2.0",
        "toy,grid,5.0,,my_bn,3,epoch,1,test_mse,1.5",
        "toy,grid,5.0,,my_bn,3,step,0,probe.loss,4.0",
        "toy,grid,5.0,,my_bn,3,step,10,probe.loss,3.0",
        "toy,grid,5.0,,my_bn,3,step,0,probe.norm[1],1.0",
        "toy,grid,5.0,,my_bn,3,step,10,probe.norm[1],1.5",
        "toy,grid,5.0,,my_bn,3,step,0,probe.norm[2],2.0",
        "toy,grid,5.0,,my_bn,3,step,10,probe.norm[2],2.5",
        "toy,grid,5.0,,my_bn,3,end,,diverged,0",
        "toy,grid,5.0,,my_bn,3,end,,cos,",
        "toy,longer budget,5.0,30,plain,3,end,,test_acc,0.25",
    ]


def test_the_committed_csvs_are_what_compare_writes():
    experiments = load_experiments(ROOT / "results")
    written = tidy_data(experiments, ROOT / "results")
    assert set(written) == {EXPERIMENTS[name].results_path(ROOT / "results").with_name(TIDY_FILE)
                            for name in EXPERIMENTS}
    for path, text in written.items():
        assert path.read_text(encoding="utf-8") == text, path
    table = pd.read_csv(ROOT / "results" / VERDICTS_CSV)
    assert table.answer.tolist() == [p["answer"] for p in read_verdicts(ROOT / "results")]


def test_the_data_pages_pandas_lines_run_and_give_the_tables_numbers(monkeypatch):
    """docs/data.md's example: each line runs from the root, and the first gives conv's table's means (the
    grid's seeds alone, which is what the part column is for)."""
    code = re.search(r"```python\n(.*?)```", DOCS["data"], flags=re.S).group(1).splitlines()
    assert code[0] == "import pandas as pd" and len(code) == 4
    monkeypatch.chdir(ROOT)
    out = [eval(line, {"pd": pd}) for line in code[1:]]  # noqa: S307 - the page's own lines
    conv = load_experiments(ROOT / "results")["conv"]
    for (net, batch), value in out[0].stack().dropna().items():
        assert abs(value - interval(conv, net, batch).mean) < 1e-9, (net, batch)
    assert set(out[1].columns) == {"plain", "torch_bn", "my_bn"} and out[1].index.names == ["range", "index"]
    assert out[2].to_numpy().sum() == len(read_verdicts(ROOT / "results"))
