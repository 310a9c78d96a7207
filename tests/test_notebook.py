"""notebooks/walkthrough.ipynb, the notebook a student opens first: it runs from top to bottom in a fresh
kernel (nbclient, pinned in requirements.txt), each check it prints holds, and its experiment at one seed
is the committed record's seed 0."""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient

from helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def test_the_walkthrough_runs_and_says_what_the_record_says():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                   ).execute()  # a cell that raises fails it here
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "the formula: True | PyTorch: True" in text and "against autograd: [True, True, True]" in text
    assert "gradcheck: True" in text and "| variance [0.99999" in text
    record = json.loads((ROOT / "results" / "results.json").read_text())
    for run in record["runs"]:
        if run["range"] == [-5.0, 5.0] and run["seed"] == 0 and run["model"] in ("plain", "my_bn"):
            mse = run["test_mse"]
            assert f"{run['model']:>6}: test MSE {mse[0]:.1f} before training, {mse[-1]:.2f} after" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # its figure
    assert all(cell.outputs == [] for cell in nbformat.read(NOTEBOOK, as_version=4).cells
               if cell.cell_type == "code")  # committed without outputs: its text is its source
