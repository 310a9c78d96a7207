"""Draw every figure of the README from saved results, and write its tables between marker comments.

    python compare.py                     # results/ -> picture/*.png and the tables in README.md

Nothing is trained here: figures and tables come from the results.json files that train.py wrote.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import torch  # noqa: E402

from data import make_dataset, target  # noqa: E402
from train import atomic_write, build_parser, flag, load_results, mean_std, summarize  # noqa: E402

STYLE = {  # model -> label, colour, line style
    "plain": ("plain (no norm)", "#E4572E", "-"),
    "torch_bn": ("nn.BatchNorm1d", "#1F77B4", "-"),
    "my_bn": ("MyBN", "#2CA02C", "--"),
}
BN_PAIR = ("torch_bn", "my_bn")
DTYPE_COLOURS = {"float32": "#D62728", "float64": "#1F77B4"}


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str = flag("results/results.json", "results of the main experiment (train.py)")
    float64: str = flag(
        "results/float64/results.json",
        "results of the same experiment in float64, for the MyBN/BatchNorm1d parity figure and table",
    )
    pictures: str = flag("picture", "directory the figures are written to")
    readme: str = flag("README.md", "README whose generated tables are rewritten ('' to leave it alone)")


def range_tag(r: float) -> str:
    return f"r{r:g}"


def ranges_of(results: dict) -> list[float]:
    return list(dict.fromkeys(run["range"][1] for run in results["runs"]))


def runs_of(results: dict, r: float, model: str) -> list[dict]:
    return [run for run in results["runs"] if run["range"][1] == r and run["model"] == model]


def models_of(results: dict) -> list[str]:
    return list(dict.fromkeys(run["model"] for run in results["runs"]))


def dataset_of(results: dict, r: float, seed: int) -> dict:
    return next(d for d in results["datasets"] if d["range"][1] == r and d["seed"] == seed)


# ----------------------------------------------------------------------------------------------
# Figures: each takes (results, outfile)


def plot_data(results: dict, r: float, outfile: Path) -> None:
    """The training set of the first seed, as train.py generated it, and the noise-free curve."""
    config = results["config"]
    seed = config["seeds"][0]
    data = make_dataset(r, seed, a=config["a"], b=config["b"], noise_std=config["noise_std"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(data.x_train.squeeze(1), data.y_train.squeeze(1), s=6, alpha=0.35, color="#FF9359",
               label=f"train data ({len(data.x_train)} points)")  # fmt: skip
    x = data.x_test.double()
    ax.plot(x.squeeze(1), target(x, config["a"], config["b"]).squeeze(1), "k--", lw=1.5, label="a·x² + b")
    ax.set(xlabel="x", ylabel="y", title=f"Data, x in (-{r:g}, {r:g}), noise std {data.noise_std:.3g}")
    ax.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(outfile, format="png", dpi=110)
    plt.close(fig)


def plot_loss_and_fit(results: dict, r: float, outfile: Path) -> None:
    """Left: test MSE per epoch over seeds for each net. Right: fitted curves over the test points."""
    config = results["config"]
    fig, (ax_mse, ax_fit) = plt.subplots(1, 2, figsize=(12, 4.4))
    floor = None
    for model in models_of(results):
        runs = runs_of(results, r, model)
        label, colour, ls = STYLE[model]
        mse = torch.tensor([run["test_mse"] for run in runs], dtype=torch.float64)  # (seeds, epochs + 1)
        epochs = range(mse.shape[1])
        ax_mse.plot(epochs, mse.mean(0), ls, color=colour, lw=2, marker="o", ms=3, label=f"{label}, mean")
        ax_mse.fill_between(epochs, mse.min(0).values, mse.max(0).values, color=colour, alpha=0.15, lw=0)
        for i, run in enumerate(runs):
            data = dataset_of(results, r, run["seed"])
            floor = data["noise_std"] ** 2
            ax_fit.plot(data["x_test"], run["predictions"], ls, color=colour, lw=1.2, alpha=0.6,
                        label=label if i == 0 else None)  # fmt: skip
    data = dataset_of(results, r, config["seeds"][0])
    ax_fit.scatter(data["x_test"], data["y_test"], s=12, color="0.45", alpha=0.6, label="test points (seed 0)")
    ax_mse.axhline(floor, color="0.3", ls=":", lw=1.5, label=f"noise floor σ² = {floor:.3g}")
    seeds = len(config["seeds"])
    ax_mse.set(yscale="log", xlabel="epoch", ylabel="test MSE",
               title=f"Test MSE, x in (-{r:g}, {r:g}); band: min–max over {seeds} seeds")  # fmt: skip
    ax_mse.legend(fontsize=8)
    ax_fit.set(xlabel="x", ylabel="y", title=f"Fits after {config['epochs']} epochs, one line per seed")
    ax_fit.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(outfile, format="png", dpi=110)
    plt.close(fig)


def relative_gaps(results: dict, key: str) -> list[tuple[float, int, torch.Tensor]]:
    """|MyBN − BatchNorm1d| / BatchNorm1d of ``key`` per (range, seed), along training."""
    gaps = []
    for r in ranges_of(results):
        mine = {run["seed"]: run[key] for run in runs_of(results, r, "my_bn")}
        for run in runs_of(results, r, "torch_bn"):
            ref = torch.tensor(run[key], dtype=torch.float64)
            gaps.append((r, run["seed"], (torch.tensor(mine[run["seed"]], dtype=torch.float64) - ref).abs() / ref))
    return gaps


def plot_parity(by_dtype: dict[str, dict], outfile: Path) -> None:
    """How far the MyBN net drifts from the BatchNorm1d net, step by step, in float32 and float64."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for dtype, results in by_dtype.items():
        gaps = relative_gaps(results, "train_loss")
        for i, (_, _, gap) in enumerate(gaps):
            label = f"{dtype} ({len(gaps)} runs: ranges × seeds)" if i == 0 else None
            steps = range(1, len(gap) + 1)
            ax.plot(steps, gap.clamp_min(1e-17), color=DTYPE_COLOURS[dtype], lw=0.7, alpha=0.5, label=label)
    ax.set(yscale="log", xlabel="training step", ylabel="|loss(MyBN) − loss(BatchNorm1d)| / loss(BatchNorm1d)",
           title="Same weights, same batches: MyBN vs nn.BatchNorm1d")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outfile, format="png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Tables for the README


def fit_spread(results: dict, run: dict) -> float:
    """std of a net's predictions over the test inputs ÷ std of the test targets: 0 is a constant fit."""
    data = dataset_of(results, run["range"][1], run["seed"])
    return (torch.tensor(run["predictions"]).std() / torch.tensor(data["y_test"]).std()).item()


def results_table(results: dict) -> str:
    """The README's table of the main experiment, and how often the plain net beats each BN net."""
    config = results["config"]
    lines = [
        f"After {config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds "
        f"({config['dtype']}, `results/results.json`). *Fit spread* is the std of the predictions over "
        "the test inputs divided by the std of the test targets: 0 means the net predicts a constant.",
        "",
        "| inputs | net | test MSE before training | final test MSE | noise floor σ² | final / floor "
        "| fit spread, min–max |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summarize(results):
        runs = runs_of(results, row["range"], row["model"])
        start = mean_std([run["test_mse"][0] for run in runs])[0]
        spreads = [fit_spread(results, run) for run in runs]
        lines.append(
            f"| (-{row['range']:g}, {row['range']:g}) | {STYLE[row['model']][0]} | {start:.4g} "
            f"| {row['mean']:.4g} ± {row['std']:.2g} | {row['noise_floor']:.3g} "
            f"| {row['mean'] / row['noise_floor']:.3g} | {min(spreads):.2f}–{max(spreads):.2f} |"
        )
    lines.append("")
    for r in ranges_of(results):
        plain = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, "plain")}
        for model in BN_PAIR:
            bn = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, model)}
            wins = sum(plain[s] < bn[s] for s in bn if s in plain)
            if plain and bn:
                lines.append(
                    f"- (-{r:g}, {r:g}): the plain net ends below {STYLE[model][0]} in {wins} of {len(bn)} seeds."
                )
    return "\n".join(lines)


def parity_table(by_dtype: dict[str, dict]) -> str:
    lines = [
        "| inputs | dtype | first-step loss, max rel. gap | final test MSE, BatchNorm1d | final test MSE, MyBN "
        "| final test MSE, max rel. gap over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for dtype, results in by_dtype.items():
        loss_gaps, mse_gaps = relative_gaps(results, "train_loss"), relative_gaps(results, "test_mse")
        for r in ranges_of(results):
            first = max(gap[0].item() for rr, _, gap in loss_gaps if rr == r)
            final = max(gap[-1].item() for rr, _, gap in mse_gaps if rr == r)
            ref, mine = (
                mean_std([run["test_mse"][-1] for run in runs_of(results, r, m)]) for m in ("torch_bn", "my_bn")
            )
            lines.append(
                f"| (-{r:g}, {r:g}) | {dtype} | {first:.1e} | {ref[0]:.4g} ± {ref[1]:.2g} "
                f"| {mine[0]:.4g} ± {mine[1]:.2g} | {final:.1e} |"
            )
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, body: str) -> str:
    """Put ``body`` between <!-- name:start --> and <!-- name:end --> in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs exactly one '{start}' followed by one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


# ----------------------------------------------------------------------------------------------


def figures(results: dict, by_dtype: dict[str, dict]) -> dict[str, Callable[[Path], None]]:
    """File name -> function that draws it."""
    todo = {}
    for r in ranges_of(results):
        todo[f"data_{range_tag(r)}.png"] = lambda out, r=r: plot_data(results, r, out)
        todo[f"loss_fit_{range_tag(r)}.png"] = lambda out, r=r: plot_loss_and_fit(results, r, out)
    if len(by_dtype) == 2:
        todo["parity.png"] = lambda out: plot_parity(by_dtype, out)
    return todo


def write_pictures(todo: dict, pictures: Path) -> list[Path]:
    """Draw every figure into a temporary directory first, then move them all into ``pictures``.

    An interruption while drawing leaves ``pictures`` exactly as it was.
    """
    pictures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pictures.parent, prefix=f".{pictures.name}.") as tmp:
        for name, draw in todo.items():
            draw(Path(tmp) / name)
        written = []
        for name in todo:
            shutil.move(Path(tmp) / name, pictures / name)  # a rename: same filesystem
            written.append(pictures / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(CompareConfig, __doc__)
    config = CompareConfig(**vars(parser.parse_args(argv)))
    try:
        results = load_results(config.results)
        by_dtype = {results["config"]["dtype"]: results}
        if config.float64 and Path(config.float64).exists():
            other = load_results(config.float64)
            by_dtype[other["config"]["dtype"]] = other
        else:
            print(f"note: no {config.float64}; skipping the parity figure and table", file=sys.stderr)
        by_dtype = {k: by_dtype[k] for k in sorted(by_dtype)}
        if len(by_dtype) == 2 and any(set(BN_PAIR) - set(models_of(r)) for r in by_dtype.values()):
            raise ValueError("the parity figure needs torch_bn and my_bn runs in both results files")
        readme = Path(config.readme) if config.readme else None
        text = readme.read_text(encoding="utf-8") if readme else ""
        if readme:
            text = replace_between_markers(text, "results-table", results_table(results))
            if len(by_dtype) == 2:
                text = replace_between_markers(text, "parity-table", parity_table(by_dtype))
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for path in write_pictures(figures(results, by_dtype), Path(config.pictures)):
        print(f"wrote {path}")
    if readme:
        atomic_write(readme, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"updated the tables in {readme}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: picture/ and the README are as they were")
