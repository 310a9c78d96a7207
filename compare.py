"""Draw every figure of the README from saved results, and write its tables between marker comments.

    python compare.py                     # results/ -> picture/*.png and the tables in README.md
    python compare.py --results results/long --pictures picture/long --readme ''

Nothing is trained here: figures and tables come from the results.json files that train.py wrote,
OUT/results.json for the main experiment and OUT/NAME/results.json for the float64, controls and sweep
experiments. The main results are required; a missing other experiment skips its figures and tables.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import torch  # noqa: E402

from bn_pytorch import VARIANTS  # noqa: E402
from data import make_dataset, target  # noqa: E402
from train import PRESETS, SATURATED, atomic_write, build_parser, flag, load_results, mean_std, summarize  # noqa: E402

COLOURS = {  # model -> colour, line style
    "plain": ("#E4572E", "-"),
    "torch_bn": ("#1F77B4", "-"),
    "my_bn": ("#2CA02C", "--"),
    "my_bn_local": ("#BCBD22", ":"),
    "plain_std_x": ("#9467BD", "-."),
    "plain_std_y": ("#8C564B", "-"),
    "plain_std_xy": ("#E377C2", "--"),
    "bn_first": ("#7F7F7F", ":"),
}
BN_PAIR = ("torch_bn", "my_bn")
DTYPE_COLOURS = {"float32": "#D62728", "float64": "#1F77B4"}
Z_SATURATED = float(torch.tensor(SATURATED).atanh())  # |z| beyond which |tanh(z)| > 0.99


@dataclass
class CompareConfig:
    """Where compare.py reads results and writes figures and tables."""

    results: str = flag("results", "directory of train.py's results (its --out)")
    pictures: str = flag("picture", "directory the figures are written to")
    readme: str = flag("README.md", "README whose generated tables are rewritten ('' to leave it alone)")


def label(model: str) -> str:
    return VARIANTS[model].label


def range_text(r: float) -> str:
    return f"(-{r:g}, {r:g})"


def ranges_of(results: dict) -> list[float]:
    return list(dict.fromkeys(run["range"][1] for run in results["runs"]))


def models_of(results: dict) -> list[str]:
    return list(dict.fromkeys(run["model"] for run in results["runs"]))


def runs_of(results: dict, r: float, model: str) -> list[dict]:
    return [run for run in results["runs"] if run["range"][1] == r and run["model"] == model]


def dataset_of(results: dict, r: float, seed: int) -> dict:
    return next(d for d in results["datasets"] if d["range"][1] == r and d["seed"] == seed)


def stacked(runs: list[dict], get: Callable[[dict], list]) -> torch.Tensor:
    """One tensor (seeds, ...) from the same quantity of several runs."""
    return torch.tensor([get(run) for run in runs], dtype=torch.float64)


def fit_spread(results: dict, run: dict) -> float:
    """std of a net's predictions over the test inputs ÷ std of the test targets: 0 is a constant fit."""
    data = dataset_of(results, run["range"][1], run["seed"])
    return (torch.tensor(run["predictions"]).std() / torch.tensor(data["y_test"]).std()).item()


def relative_gap(values: list[float], reference: list[float]) -> torch.Tensor:
    """|values − reference| / reference, element by element, in float64."""
    ref = torch.tensor(reference, dtype=torch.float64)
    return (torch.tensor(values, dtype=torch.float64) - ref).abs() / ref


def relative_gaps(results: dict, key: str) -> list[tuple[float, int, torch.Tensor]]:
    """|MyBN − BatchNorm1d| / BatchNorm1d of ``key`` per (range, seed), along training."""
    gaps = []
    for r in ranges_of(results):
        mine = {run["seed"]: run[key] for run in runs_of(results, r, "my_bn")}
        for run in runs_of(results, r, "torch_bn"):
            gaps.append((r, run["seed"], relative_gap(mine[run["seed"]], run[key])))
    return gaps


# ----------------------------------------------------------------------------------------------
# Figures: each draws from results into outfile


def _band(ax, x, values: torch.Tensor, model: str, text: str | None = None, **kwargs) -> None:
    """Mean over seeds as a line, min–max over seeds as a shaded band. ``values`` is (seeds, len(x))."""
    colour, ls = COLOURS[model]
    ax.plot(x, values.mean(0), ls, color=colour, lw=2, label=label(model) if text is None else text, **kwargs)
    if len(values) > 1:
        ax.fill_between(x, values.min(0).values, values.max(0).values, color=colour, alpha=0.15, lw=0)


def _save(fig, outfile: Path) -> None:
    fig.tight_layout()
    fig.savefig(outfile, format="png", dpi=110)
    plt.close(fig)


def plot_data(results: dict, r: float, outfile: Path) -> None:
    """The training set of the first seed, as train.py generated it, and the noise-free curve."""
    config = results["config"]
    seed = config["seeds"][0]
    noise_std = dataset_of(results, r, seed)["noise_std"]
    data = make_dataset(r, seed, a=config["a"], b=config["b"], noise_std=noise_std)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(data.x_train.squeeze(1), data.y_train.squeeze(1), s=6, alpha=0.35, color="#FF9359",
               label=f"train data ({len(data.x_train)} points)")  # fmt: skip
    x = data.x_test.double()
    ax.plot(x.squeeze(1), target(x, config["a"], config["b"]).squeeze(1), "k--", lw=1.5, label="a·x² + b")
    ax.set(xlabel="x", ylabel="y", title=f"Data, x in {range_text(r)}, noise std {noise_std:.3g}")
    ax.legend(loc="upper center")
    _save(fig, outfile)


def _mse_panel(ax, results: dict, r: float, models: list[str]) -> None:
    """Test MSE per epoch for ``models``: mean and min–max band over seeds, with the noise floor."""
    for model in models:
        mse = stacked(runs_of(results, r, model), lambda run: run["test_mse"])  # (seeds, epochs + 1)
        _band(ax, range(mse.shape[1]), mse, model, marker="o", ms=3)
    floor = mean_std([d["noise_std"] ** 2 for d in results["datasets"] if d["range"][1] == r])[0]
    ax.axhline(floor, color="0.3", ls=":", lw=1.5, label=f"noise floor σ² = {floor:.3g}")
    seeds = len(results["config"]["seeds"])
    ax.set(yscale="log", xlabel="epoch", ylabel="test MSE",
           title=f"Test MSE, x in {range_text(r)}; mean, band: min–max over {seeds} seeds")  # fmt: skip
    ax.legend(fontsize=8)


def plot_loss_and_fit(results: dict, r: float, outfile: Path) -> None:
    """Left: test MSE per epoch over seeds for each net. Right: fitted curves over the test points."""
    config = results["config"]
    fig, (ax_mse, ax_fit) = plt.subplots(1, 2, figsize=(12, 4.4))
    _mse_panel(ax_mse, results, r, models_of(results))
    for model in models_of(results):
        colour, ls = COLOURS[model]
        for i, run in enumerate(runs_of(results, r, model)):
            x_test = dataset_of(results, r, run["seed"])["x_test"]
            ax_fit.plot(x_test, run["predictions"], ls, color=colour, lw=1.2, alpha=0.6,
                        label=label(model) if i == 0 else None)  # fmt: skip
    data = dataset_of(results, r, config["seeds"][0])
    ax_fit.scatter(data["x_test"], data["y_test"], s=12, color="0.45", alpha=0.6,
                   label=f"test points (seed {config['seeds'][0]})")  # fmt: skip
    ax_fit.set(xlabel="x", ylabel="y", title=f"Fits after {config['epochs']} epochs, one line per seed")
    ax_fit.legend(fontsize=8, loc="upper center")
    _save(fig, outfile)


def plot_parity(by_dtype: dict[str, dict], outfile: Path) -> None:
    """How far the MyBN net drifts from the BatchNorm1d net, step by step, in float32 and float64."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for dtype, results in by_dtype.items():
        gaps = relative_gaps(results, "train_loss")
        for i, (_, _, gap) in enumerate(gaps):
            text = f"{dtype} ({len(gaps)} runs: ranges × seeds)" if i == 0 else None
            steps = range(1, len(gap) + 1)
            ax.plot(steps, gap.clamp_min(1e-17), color=DTYPE_COLOURS[dtype], lw=0.7, alpha=0.5, label=text)
    ax.set(yscale="log", xlabel="training step", ylabel="|loss(MyBN) − loss(BatchNorm1d)| / loss(BatchNorm1d)",
           title="Same weights, same batches: MyBN vs nn.BatchNorm1d")  # fmt: skip
    ax.legend(fontsize=8)
    _save(fig, outfile)


def plot_diagnostics(results: dict, r: float, models: list[str], outfile: Path) -> None:
    """Per hidden block: the fraction of saturated tanh units, and the gradient norm of its weights."""
    blocks = len(results["runs"][0]["diagnostics"]["saturation"][0])
    fig, axes = plt.subplots(2, blocks, figsize=(3.4 * blocks, 6.2), sharex=True)
    for model in models:
        runs = runs_of(results, r, model)
        steps = runs[0]["diagnostics"]["step"]
        sat = stacked(runs, lambda run: run["diagnostics"]["saturation"])  # (seeds, records, blocks)
        grad = stacked(runs, lambda run: run["diagnostics"]["grad_norm"])
        for b in range(blocks):
            _band(axes[0, b], steps, sat[:, :, b], model)
            _band(axes[1, b], steps, grad[:, :, b], model)
    for b in range(blocks):
        axes[0, b].set(title=f"block {b + 1}", ylim=(-0.03, 1.03))
        axes[1, b].set(yscale="log", xlabel="training step")
    axes[0, 0].set_ylabel(f"fraction of units with |tanh| > {SATURATED}")
    axes[1, 0].set_ylabel("‖∂loss/∂W‖ of the block's Linear")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"x in {range_text(r)}: saturation and gradients per block (mean, min–max over seeds)")
    _save(fig, outfile)


def plot_percentiles(results: dict, models: list[str], outfile: Path) -> None:
    """Ioffe & Szegedy (2015), Figure 1 (b, c): one unit's tanh input over training, as percentiles."""
    ranges = ranges_of(results)
    fig, axes = plt.subplots(len(ranges), len(models), figsize=(4.2 * len(models), 3.4 * len(ranges)), squeeze=False)
    seed = results["config"]["seeds"][0]
    for row, r in enumerate(ranges):
        for col, model in enumerate(models):
            ax = axes[row, col]
            diag = runs_of(results, r, model)[0]["diagnostics"]
            last = len(diag["unit_q"][0]) - 1
            q = torch.tensor(diag["unit_q"])[:, last, :]  # (records, 3): 15th, 50th, 85th percentile
            colour = COLOURS[model][0]
            for k, pct in enumerate(diag["quantiles"]):
                ax.plot(diag["step"], q[:, k], color=colour, lw=2 if pct == 0.5 else 1, label=f"{pct:.0%}")
            ax.axhspan(Z_SATURATED, 99, color="0.85", lw=0)
            ax.axhspan(-99, -Z_SATURATED, color="0.85", lw=0)
            top = max(3.5, q.abs().max().item() * 1.1)
            ax.set(ylim=(-top, top), title=f"{label(model)}, x in {range_text(r)}", xlabel="training step")
            if col == 0:
                ax.set_ylabel(f"tanh input, unit {diag['unit']} of block {last + 1}")
            ax.legend(fontsize=7, title="percentile", title_fontsize=7, loc="lower right")
    fig.suptitle(f"One unit's tanh input over training (seed {seed}); grey: where tanh saturates")
    _save(fig, outfile)


def plot_controls(results: dict, outfile: Path) -> None:
    """The plain net with one thing changed, beside the main nets: test MSE, and last-block saturation."""
    r = ranges_of(results)[0]
    models = models_of(results)
    fig, (ax_mse, ax_sat) = plt.subplots(1, 2, figsize=(13, 4.8))
    _mse_panel(ax_mse, results, r, models)
    for model in models:
        runs = runs_of(results, r, model)
        sat = stacked(runs, lambda run: run["diagnostics"]["saturation"])  # (seeds, records, blocks)
        _band(ax_sat, runs[0]["diagnostics"]["step"], sat[:, :, -1], model)
    ax_sat.set(xlabel="training step", ylabel=f"fraction of units with |tanh| > {SATURATED}", ylim=(-0.03, 1.03),
               title="Saturation of the last hidden block")  # fmt: skip
    ax_mse.legend(fontsize=7, ncol=2)
    _save(fig, outfile)


def sweep_curves(results: dict, model: str) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Ranges, final test MSE ÷ Var(y_test) (seeds, ranges), and the noise floor on the same scale."""
    ranges = ranges_of(results)
    ratios, floors = [], []
    for r in ranges:
        runs = runs_of(results, r, model)
        var_y = [torch.tensor(dataset_of(results, r, run["seed"])["y_test"]).var().item() for run in runs]
        ratios.append([run["test_mse"][-1] / v for run, v in zip(runs, var_y, strict=True)])
        floors.append(mean_std([dataset_of(results, r, run["seed"])["noise_std"] ** 2 / v
                                for run, v in zip(runs, var_y, strict=True)])[0])  # fmt: skip
    return ranges, torch.tensor(ratios, dtype=torch.float64).T, torch.tensor(floors)


def plot_sweep(results: dict, outfile: Path) -> None:
    """Final test MSE relative to the targets' variance, against the input range R."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for model in models_of(results):
        ranges, ratios, floors = sweep_curves(results, model)
        _band(ax, ranges, ratios, model, marker="o", ms=4)
    ax.plot(ranges, floors, ":", color="0.3", lw=1.5, label="noise floor σ² / Var(y)")
    ax.axhline(1.0, color="0.6", lw=1, label="predicting the mean of y")
    config = results["config"]
    title = (f"Same signal-to-noise for every R (noise std {config['noise_scaled']:g}·R²), "
             f"{config['epochs']} epochs, {len(config['seeds'])} seeds")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="input range R (inputs in (-R, R))",
           ylabel="final test MSE / Var(y_test)", title=title)  # fmt: skip
    ax.set_xticks(ranges, [f"{r:g}" for r in ranges])
    ax.legend(fontsize=8)
    _save(fig, outfile)


SINGLE_PROCESS_TWIN = {"my_bn_local": "my_bn"}  # in one process, per-process statistics are the batch's


def ddp_gaps(ddp: dict, single: dict, key: str) -> list[tuple[str, torch.Tensor]]:
    """Per multi-process run: (model, |multi − single| / single of ``key`` along training), against the
    single-process run of the same net, range and seed."""
    if ddp["config"]["dtype"] != single["config"]["dtype"]:
        raise ValueError("the multi-process and single-process results to compare must have the same dtype")
    gaps = []
    for run in ddp["runs"]:
        twin = SINGLE_PROCESS_TWIN.get(run["model"], run["model"])
        ref = next(r for r in runs_of(single, run["range"][1], twin) if r["seed"] == run["seed"])
        gaps.append((run["model"], relative_gap(run[key], ref[key])))
    return gaps


def plot_ddp(ddp: dict, single: dict, outfile: Path) -> None:
    """How far each net trained over several processes drifts from the same net trained in one."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    labelled = set()
    for model, gap in ddp_gaps(ddp, single, "train_loss"):
        colour, ls = COLOURS[model]
        text = None if model in labelled else label(model)
        labelled.add(model)
        ax.plot(range(1, len(gap) + 1), gap.clamp_min(1e-17), ls, color=colour, lw=0.9, alpha=0.7, label=text)
    processes = ddp["environment"]["processes"]
    ax.set(yscale="log", xlabel="training step", ylabel="relative gap in training loss",
           title=f"{processes} processes vs 1, same batches ({ddp['config']['dtype']})")  # fmt: skip
    ax.legend(fontsize=8)
    _save(fig, outfile)


def figures(experiments: dict[str, dict]) -> dict[str, Callable[[Path], None]]:
    """File name -> function that draws it, for every experiment present."""
    main = experiments["main"]
    todo = {}
    for r in ranges_of(main):
        todo[f"data_r{r:g}.png"] = lambda out, r=r: plot_data(main, r, out)
        todo[f"loss_fit_r{r:g}.png"] = lambda out, r=r: plot_loss_and_fit(main, r, out)
        if "diagnostics" in main["runs"][0]:
            todo[f"diagnostics_r{r:g}.png"] = lambda out, r=r: plot_diagnostics(main, r, models_of(main), out)
    if "diagnostics" in main["runs"][0]:
        todo["percentiles.png"] = lambda out: plot_percentiles(main, models_of(main), out)
    if "float64" in experiments:
        todo["parity.png"] = lambda out: plot_parity(by_dtype(experiments), out)
    if "controls" in experiments:
        todo["controls.png"] = lambda out: plot_controls(experiments["controls"], out)
    if "sweep" in experiments:
        todo["sweep.png"] = lambda out: plot_sweep(experiments["sweep"], out)
    if "ddp" in experiments and "float64" in experiments:
        todo["ddp.png"] = lambda out: plot_ddp(experiments["ddp"], experiments["float64"], out)
    return todo


# ----------------------------------------------------------------------------------------------
# Tables for the README


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
            f"| {range_text(row['range'])} | {label(row['model'])} | {start:.4g} "
            f"| {row['mean']:.4g} ± {row['std']:.2g} | {row['noise_floor']:.3g} "
            f"| {row['mean'] / row['noise_floor']:.3g} | {min(spreads):.2f}–{max(spreads):.2f} |"
        )
    lines.append("")
    for r in ranges_of(results):
        plain = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, "plain")}
        for model in BN_PAIR:
            bn = {run["seed"]: run["test_mse"][-1] for run in runs_of(results, r, model)}
            if plain and bn:
                wins = sum(plain[s] < bn[s] for s in bn if s in plain)
                lines.append(
                    f"- {range_text(r)}: the plain net ends below {label(model)} in {wins} of {len(bn)} seeds."
                )
    return "\n".join(lines)


def by_dtype(experiments: dict[str, dict]) -> dict[str, dict]:
    """The main and the float64 results, keyed by their dtype."""
    pair = {experiments[name]["config"]["dtype"]: experiments[name] for name in ("main", "float64")}
    if len(pair) != 2 or any(set(BN_PAIR) - set(models_of(results)) for results in pair.values()):
        raise ValueError("the parity figure needs torch_bn and my_bn runs in a float32 and a float64 results file")
    return dict(sorted(pair.items()))


def parity_table(pair: dict[str, dict]) -> str:
    lines = [
        "| inputs | dtype | first-step loss, max rel. gap | final test MSE, BatchNorm1d | final test MSE, MyBN "
        "| final test MSE, max rel. gap over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for dtype, results in pair.items():
        loss_gaps, mse_gaps = relative_gaps(results, "train_loss"), relative_gaps(results, "test_mse")
        for r in ranges_of(results):
            first = max(gap[0].item() for rr, _, gap in loss_gaps if rr == r)
            final = max(gap[-1].item() for rr, _, gap in mse_gaps if rr == r)
            ref, mine = (mean_std([run["test_mse"][-1] for run in runs_of(results, r, m)]) for m in BN_PAIR)
            lines.append(
                f"| {range_text(r)} | {dtype} | {first:.1e} | {ref[0]:.4g} ± {ref[1]:.2g} "
                f"| {mine[0]:.4g} ± {mine[1]:.2g} | {final:.1e} |"
            )
    return "\n".join(lines)


def _start_end(runs: list[dict], key: str, block: int, fmt: str) -> str:
    """A diagnostic of one block, mean over seeds, at the first recorded step → at the last."""
    return " → ".join(format(mean_std([run["diagnostics"][key][k][block] for run in runs])[0], fmt) for k in (0, -1))


def controls_table(results: dict) -> str:
    """Per variant: final test MSE, how many seeds fit the curve, and saturation at start and end."""
    r = ranges_of(results)[0]
    lines = [
        f"x in {range_text(r)}, {results['config']['epochs']} epochs, mean ± std over "
        f"{len(results['config']['seeds'])} seeds (`results/controls/results.json`). A seed *fits* when its fit "
        "spread is above 0.5; saturation is the fraction of units with |tanh| > 0.99 in the training batch, "
        "mean over seeds, at the first step → at the last.",
        "",
        "| net | final test MSE | final / floor | seeds that fit | saturation, block 1 | saturation, block 4 |",
        "|---|---|---|---|---|---|",
    ]
    for row in summarize(results):
        runs = runs_of(results, r, row["model"])
        fits = sum(fit_spread(results, run) > 0.5 for run in runs)
        sat = [_start_end(runs, "saturation", b, ".2f") for b in (0, -1)]
        lines.append(
            f"| {label(row['model'])} | {row['mean']:.4g} ± {row['std']:.2g} | {row['mean'] / row['noise_floor']:.3g} "
            f"| {fits} of {len(runs)} | {sat[0]} | {sat[1]} |"
        )
    return "\n".join(lines)


def sweep_table(results: dict) -> str:
    """Final test MSE ÷ Var(y_test) per range and net, the noise floor on that scale, and how far the fits reach."""
    models = models_of(results)
    curves = {model: sweep_curves(results, model) for model in models}
    ranges, _, floors = curves[models[0]]

    def reach(r: float, model: str) -> float:  # largest prediction ÷ largest test target, mean over seeds
        runs = runs_of(results, r, model)
        return mean_std([max(run["predictions"]) / max(dataset_of(results, r, run["seed"])["y_test"]) for run in runs])[
            0
        ]

    header = " | ".join(label(m) for m in models) + " | " + " | ".join(f"reach, {label(m)}" for m in models)
    lines = [
        f"Final test MSE ÷ Var(y_test), mean ± std over {len(results['config']['seeds'])} seeds "
        "(`results/sweep/results.json`); 1 is what predicting the mean of y scores. *Reach* is the largest "
        "prediction divided by the largest test target, mean over seeds.",
        "",
        f"| R | noise floor | {header} |",
        "|---" * (2 * len(models) + 2) + "|",
    ]
    for i, r in enumerate(ranges):
        cells = [f"{curves[m][1][:, i].mean():.3f} ± {curves[m][1][:, i].std():.3f}" for m in models]
        cells += [f"{reach(r, m):.2f}" for m in models]
        lines.append(f"| {r:g} | {floors[i]:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saturation_table(results: dict) -> str:
    """Main experiment: saturation per block and the last block's gradient norm, first step → last."""
    blocks = len(results["runs"][0]["diagnostics"]["saturation"][0])
    lines = [
        "Fraction of tanh units with |tanh| > 0.99 in the training batch, per block, and the gradient norm of "
        "block 4's weights: at the first step → at the last, mean over seeds (`results/results.json`).",
        "",
        "| inputs | net | " + " | ".join(f"block {b + 1}" for b in range(blocks)) + " | ‖∂loss/∂W‖, block 4 |",
        "|---" * (blocks + 3) + "|",
    ]
    for r in ranges_of(results):
        for model in models_of(results):
            runs = runs_of(results, r, model)
            cells = [_start_end(runs, "saturation", b, ".2f") for b in range(blocks)]
            cells.append(_start_end(runs, "grad_norm", -1, ".2g"))
            lines.append(f"| {range_text(r)} | {label(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ddp_table(ddp: dict, single: dict) -> str:
    """Per range and net: final test MSE in one process and in several, and how far apart the runs get."""
    processes = ddp["environment"]["processes"]
    gaps_per_run = zip(ddp["runs"], ddp_gaps(ddp, single, "train_loss"), strict=True)
    loss_gaps = {(run["range"][1], run["model"], run["seed"]): gap for run, (_, gap) in gaps_per_run}
    lines = [
        f"{ddp['config']['dtype']}, mean ± std over {len(ddp['config']['seeds'])} seeds "
        "(`results/ddp/results.json` against `results/float64/results.json`); the gaps are relative, "
        "the largest over the seeds.",
        "",
        f"| inputs | net | final test MSE, 1 process | final test MSE, {processes} processes "
        "| training loss, gap at step 1 | largest gap over training |",
        "|---|---|---|---|---|---|",
    ]
    for r in ranges_of(ddp):
        for model in models_of(ddp):
            one = mean_std([run["test_mse"][-1] for run in runs_of(single, r, SINGLE_PROCESS_TWIN.get(model, model))])
            many = mean_std([run["test_mse"][-1] for run in runs_of(ddp, r, model)])
            gaps = [g for (rr, m, _), g in loss_gaps.items() if (rr, m) == (r, model)]
            lines.append(
                f"| {range_text(r)} | {label(model)} | {one[0]:.4g} ± {one[1]:.2g} | {many[0]:.4g} ± {many[1]:.2g} "
                f"| {max(g[0].item() for g in gaps):.1e} | {max(g.max().item() for g in gaps):.1e} |"
            )
    return "\n".join(lines)


def tables(experiments: dict[str, dict]) -> dict[str, str]:
    """README marker name -> generated body, for every experiment present."""
    out = {"results-table": results_table(experiments["main"])}
    if "diagnostics" in experiments["main"]["runs"][0]:
        out["saturation-table"] = saturation_table(experiments["main"])
    if "float64" in experiments:
        out["parity-table"] = parity_table(by_dtype(experiments))
    if "controls" in experiments:
        out["controls-table"] = controls_table(experiments["controls"])
    if "sweep" in experiments:
        out["sweep-table"] = sweep_table(experiments["sweep"])
    if "ddp" in experiments and "float64" in experiments:
        out["ddp-table"] = ddp_table(experiments["ddp"], experiments["float64"])
    return out


def replace_between_markers(text: str, name: str, body: str) -> str:
    """Put ``body`` between <!-- name:start --> and <!-- name:end --> in ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README needs exactly one '{start}' followed by one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


# ----------------------------------------------------------------------------------------------


def load_experiments(root: Path) -> dict[str, dict]:
    """The results of every experiment under ``root``; the main one must be there."""
    experiments = {"main": load_results(root)}
    for name in PRESETS:
        path = root / name / "results.json"
        if name == "main":
            continue
        if path.exists():
            experiments[name] = load_results(path)
        else:
            print(f"note: no {path}: skipping its figures and tables (python train.py {name})", file=sys.stderr)
    return experiments


_TODO: dict[str, Callable[[Path], None]] = {}  # what forked drawing processes draw, by name


def _draw(name: str, folder: str) -> None:
    _TODO[name](Path(folder) / name)


def write_pictures(todo: dict[str, Callable[[Path], None]], pictures: Path) -> list[Path]:
    """Draw every figure into a temporary directory first, then move them all into ``pictures``.

    Figures are drawn side by side in processes forked from this one, one per core (where the
    platform forks). An interruption while drawing leaves ``pictures`` exactly as it was.
    """
    pictures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pictures.parent, prefix=f".{pictures.name}.") as tmp:
        workers = min(len(todo), len(os.sched_getaffinity(0)))
        if workers > 1 and "fork" in mp.get_all_start_methods():
            _TODO.clear()
            _TODO.update(todo)
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                list(pool.map(_draw, todo, [tmp] * len(todo)))
        else:
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
    readme = Path(config.readme) if config.readme else None
    try:
        experiments = load_experiments(Path(config.results))
        todo = figures(experiments)
        text = readme.read_text(encoding="utf-8") if readme else ""
        for name, body in tables(experiments).items() if readme else ():
            text = replace_between_markers(text, name, body)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    for path in write_pictures(todo, Path(config.pictures)):
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
