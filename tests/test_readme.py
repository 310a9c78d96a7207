"""The README is the repository's front page: what it shows must exist and what it says must run."""

import re
from pathlib import Path

import torch

import compare
from train import load_results

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_linked_image_exists():
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README) + re.findall(r'<img[^>]+src="([^"]+)"', README)
    for link in links:
        assert not link.startswith("http"), f"images are the repository's own: {link}"
        assert (ROOT / link).is_file(), f"README links {link}, which does not exist"


def test_ci_runs_the_readme_test_command():
    ci_commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and "pytest" in line
    ]
    assert len(ci_commands) == 1
    assert ci_commands[0] in README


# ---------------------------------------------------------------------------------------------- the README's words
# Each sentence of "What these numbers say" and of the parity section, checked against the results
# the README's tables and figures were made from. If a rerun changes the results, these fail and the
# text must be revisited.

RESULTS = ROOT / "results" / "results.json"
RESULTS_64 = ROOT / "results" / "float64" / "results.json"


def _runs(results, r, model):
    return compare.runs_of(results, r, model)


def test_readme_tables_are_the_code_output():
    results, results64 = load_results(RESULTS), load_results(RESULTS_64)
    assert compare.results_table(results) in README
    assert compare.parity_table({"float32": results, "float64": results64}) in README


def test_claims_about_inputs_in_minus5_5():
    results = load_results(RESULTS)
    floor = 1.0
    for run in _runs(results, 5.0, "plain"):
        y_test = torch.tensor(compare.dataset_of(results, 5.0, run["seed"])["y_test"])
        assert compare.fit_spread(results, run) < 0.01  # one constant for every x
        assert run["test_mse"][-1] > 10 * floor  # tens of times the noise floor
        assert abs(run["test_mse"][-1] / y_test.var().item() - 1) < 0.2  # near the variance of the targets
    plain = {run["seed"]: run["test_mse"][-1] for run in _runs(results, 5.0, "plain")}
    for model in compare.BN_PAIR:
        runs = _runs(results, 5.0, model)
        for run in runs:
            assert compare.fit_spread(results, run) > 0.5 and run["test_mse"][-1] < 0.25 * plain[run["seed"]]
        mse = torch.tensor([run["test_mse"] for run in runs])
        assert mse[:, -1].mean() > 2 * floor  # several times above the floor
        assert mse[:, -1].mean() < mse[:, -3].mean() < mse[:, len(mse[0]) // 2].mean()  # still falling


def test_claims_about_inputs_in_minus1_1():
    results = load_results(RESULTS)
    plain = {run["seed"]: run for run in _runs(results, 1.0, "plain")}
    bn = {run["seed"]: run for run in _runs(results, 1.0, "torch_bn")}
    assert sum(plain[s]["test_mse"][-1] < bn[s]["test_mse"][-1] for s in bn) > len(bn) / 2  # usually lower
    assert min(compare.fit_spread(results, run) for run in plain.values()) < 0.1  # a collapsed seed

    def jumpiness(runs):  # median over seeds of |Δ log test MSE| per epoch, second half of training
        return torch.tensor(
            [torch.tensor(run["test_mse"]).log()[len(run["test_mse"]) // 2 :].diff().abs().mean() for run in runs]
        ).median()

    for model in compare.BN_PAIR:
        assert jumpiness(_runs(results, 1.0, model)) > 2 * jumpiness(plain.values())  # noisier curves


def test_claims_about_parity():
    by_dtype = {"float32": load_results(RESULTS), "float64": load_results(RESULTS_64)}
    final64 = [gap[-1].item() for *_, gap in compare.relative_gaps(by_dtype["float64"], "test_mse")]
    assert len(final64) == 10 and max(final64) < 1e-5  # same test MSE to many digits, every seed
    first32 = [gap[0].item() for *_, gap in compare.relative_gaps(by_dtype["float32"], "train_loss")]
    assert max(first32) > 1e-5  # the first loss already differs well above 1e-7
    final32 = [gap[-1].item() for *_, gap in compare.relative_gaps(by_dtype["float32"], "test_mse")]
    assert max(final32) > 1e-2  # different runs by the end


def test_every_figure_is_shown():
    linked = set(re.findall(r"\]\((picture/[^)\s]+)\)", README))
    assert {f"picture/{p.name}" for p in (ROOT / "picture").glob("*.png")} == linked
