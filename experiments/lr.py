"""lr: does the plain net simply need another learning rate, or more epochs?

Bjorck, Gomes, Selman & Weinberger (2018) argue that batch norm's main effect is that large steps
stay stable. Every net trains on a log-spaced grid of learning rates, for Adam and for plain SGD,
for 100 epochs; the 10-epoch budget is the same run read at epoch 10 (the learning rate is constant
and the batches of the first 10 epochs are those of a 10-epoch run, so the two are identical).

A run *trains* when its final test MSE is below half the variance of the test targets (it explains
more than half of y, where predicting the mean explains nothing); it *diverges* when its loss
becomes infinite or NaN, or its final test MSE ends above its initial one. The grid is wide enough
that every net fails to train at its top.

Beside it, at initialisation, the relative loss after one SGD step along the gradient,
L(θ − α·g) / L(θ) on the first training batch, against α: how far a single step can go.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from functools import partial
from pathlib import Path

import torch
from torch import nn

from experiments.record import Experiment
from lab import stats
from lab.ensemble import Ensemble
from lab.loop import BatchOrder
from lab.nets import TanhMLP
from lab.pages import table
from lab.plotting import COLOURS, label, range_text, save, subplots
from lab.probe import preserved
from lab.regression import Regression, dataset_entry, dataset_for, dataset_of, models_of, ranges_of, runs_of
from lab.results import rounded, source
from lab.settings import DTYPES, TEN_SEEDS
from lab.verdicts import EASY, HARD, Part, Verdict, decades, paired
from lab.workers import environment, run_pool

GRIDS = {  # optimizer -> learning rates, half a decade apart, from slow to failing for every net
    "adam": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
    "sgd": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
}
BUDGETS = (10, 100)  # epochs (capped at the run's own, for a short test run)
ALPHAS = [10 ** (k / 4) for k in range(-16, 5)]  # 1e-4 ... 10, for the one-step loss ratio


def train_members(config, job: tuple[float, str]) -> list[dict]:
    """Every (optimizer, learning rate, seed) cell of one (range, net), trained side by side as one
    ``ensemble.Ensemble``: all of them in each call instead of one, many times faster. Each member
    starts from its seed's initial weights and sees its seed's batches, as a run of
    ``regression.train_one`` would."""
    r, model = job
    cells = [(optimizer, lr, s) for optimizer in GRIDS for lr in GRIDS[optimizer] for s in config.seeds]
    members = [(lr, s) for _, lr, s in cells]
    dtype = DTYPES[config.dtype]
    data = {s: dataset_for(config, r, s) for s in config.seeds}
    nets = [TanhMLP(model, s, bn_momentum=config.bn_momentum, dtype=dtype, mybn_backend=config.mybn_backend)
            for _, s in members]
    ensemble = Ensemble(nets, [lr for lr, _ in members], [optimizer for optimizer, _, _ in cells])
    x_train, y_train, x_test, y_test = (torch.stack([getattr(data[s], name) for _, s in members])
                                        for name in ("x_train", "y_train", "x_test", "y_test"))
    orders = [BatchOrder(len(data[s].x_train), config.batch_size, config.epochs, s) for _, s in members]

    def test() -> tuple[torch.Tensor, torch.Tensor]:  # (K,) test MSE, (K, n_test, 1) predictions
        pred = ensemble.evaluate(x_test)
        return (pred - y_test).square().mean((1, 2)), pred

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.unsqueeze(-1)  # (K, B, 1)
        return x_train.gather(1, idx), y_train.gather(1, idx)

    tests = [test()[0]]
    losses = ensemble.fit(orders, batch, after_epoch=lambda _: tests.append(test()[0]))
    pred = test()[1]
    tests, losses = torch.stack(tests, 1), torch.stack(losses, 1)  # (K, epochs + 1), (K, steps)
    runs = [{"range": [-r, r], "model": model, "seed": s, "optimizer": optimizer, "lr": lr,
             "test_mse": tests[j].tolist(), "train_loss": losses[j].tolist(), "predictions": pred[j, :, 0].tolist()}
            for j, (optimizer, lr, s) in enumerate(cells)]
    return [{**run_, "diverged": diverged(run_)} for run_ in runs]  # its non-finite numbers are null in the file


def run(config, log=print) -> dict:
    """Every grid cell, one ensemble per (range, net) in the worker pool; the one-step ratios at
    initialisation."""
    jobs = [(r, model) for model in reversed(config.models) for r in config.ranges]
    runs = []
    with run_pool(config, len(jobs)) as pool_map:
        for (r, model), cells in zip(jobs, pool_map(functools.partial(train_members, config), jobs), strict=True):
            runs += cells
            log(f"lr grid: range (-{r:g}, {r:g}), {model}: {len(cells)} runs")
    one_step = [{"range": [-r, r], "model": model, "seed": s, "alpha": ALPHAS,
                 "ratio": rounded(one_step_ratios(config, r, model, s))}
                for r in config.ranges for model in config.models for s in config.seeds]
    datasets = [dataset_entry(config, r, s) for r in config.ranges for s in config.seeds]
    return {"config": dataclasses.asdict(config), "environment": environment(config), "datasets": datasets,
            "runs": runs, "one_step": one_step}


def one_step_ratios(config, r: float, model: str, seed: int) -> list[float]:
    """L(θ − α·g) / L(θ) for each α of ``ALPHAS``, at initialisation, on the run's first batch (batch
    norm in training mode, its running statistics put back after every probe)."""
    data = dataset_for(config, r, seed)
    idx = BatchOrder(len(data.x_train), config.batch_size, 1, seed)[0][0]
    net = TanhMLP(model, seed, bn_momentum=config.bn_momentum, dtype=DTYPES[config.dtype],
                  mybn_backend=config.mybn_backend).train()
    x, y = data.x_train[idx], data.y_train[idx]
    loss = nn.functional.mse_loss(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    ratios = []
    for alpha in ALPHAS:
        with preserved(net), torch.no_grad():
            for p, g in zip(net.parameters(), grads, strict=True):
                p.sub_(alpha * g)
            ratios.append((nn.functional.mse_loss(net(x), y) / loss).item())
    return [v if math.isfinite(v) else 1e30 for v in ratios]


def diverged(run_: dict) -> bool:
    """The loss went infinite or NaN, or the final test MSE ended above the initial one."""
    finite = all(math.isfinite(v) for v in run_["train_loss"]) and all(math.isfinite(v) for v in run_["test_mse"])
    return not finite or run_["test_mse"][-1] > run_["test_mse"][0]


def trains(results: dict, run_: dict, epochs: int) -> bool:
    """The test MSE after ``epochs`` is below half the variance of the test targets."""
    y = torch.tensor(dataset_of(results, run_["range"][1], run_["seed"])["y_test"], dtype=torch.float64)
    value = run_["test_mse"][epochs]
    return math.isfinite(value) and value < 0.5 * y.var().item()


def cell(results: dict, r: float, model: str, optimizer: str, lr: float) -> list[dict]:
    return [x for x in runs_of(results, r, model) if x["optimizer"] == optimizer and x["lr"] == lr]


def final_mse(results: dict, r: float, model: str, optimizer: str, lr: float, epochs: int) -> float:
    """Median over seeds of the test MSE after ``epochs`` (inf where a seed's went non-finite)."""
    values = [x["test_mse"][epochs] for x in cell(results, r, model, optimizer, lr)]
    return float(torch.tensor([v if math.isfinite(v) else math.inf for v in values]).median())


def largest_training_lr(results: dict, r: float, model: str, optimizer: str, epochs: int) -> float | None:
    """The largest learning rate of the grid at which every seed trains within ``epochs``."""
    ok = [lr for lr in GRIDS[optimizer]
          if all(trains(results, x, epochs) for x in cell(results, r, model, optimizer, lr))]
    return max(ok) if ok else None


def best(results: dict, r: float, model: str, optimizer: str, epochs: int) -> tuple[float, float]:
    """(learning rate, median test MSE) of the grid's best cell within ``epochs``."""
    return min(((lr, final_mse(results, r, model, optimizer, lr, epochs)) for lr in GRIDS[optimizer]),
               key=lambda t: t[1])


def summary_table(results: dict) -> str:
    """train.py's end-of-run lines: per (range, net, optimizer), after the run's last epoch, the largest
    learning rate at which every seed trains, the best cell, and how many cells diverged."""
    epochs, seeds = results["config"]["epochs"], len(results["config"]["seeds"])
    lines = [f"{epochs} epochs, {seeds} seed(s) per learning rate; grid {' '.join(f'{lr:g}' for lr in GRIDS['adam'])}",
             f"{'range':<10} {'model':<10} {'optimizer':<9} {'largest lr that trains':>22}  "
             f"{'best: median test MSE (lr)':>28}  diverged"]
    for r in reversed(ranges_of(results)):
        for optimizer in GRIDS:
            for model in models_of(results):
                largest = largest_training_lr(results, r, model, optimizer, epochs)
                lr, mse = best(results, r, model, optimizer, epochs)
                cells = [x for x in results["runs"] if x["range"][1] == r and x["model"] == model
                         and x["optimizer"] == optimizer]
                gone = sum(bool(x["diverged"]) for x in cells)
                shown = "none" if largest is None else f"{largest:g}"
                lines.append(f"{range_text(r):<10} {model:<10} {optimizer:<9} {shown:>22}  "
                             f"{f'{mse:.4g} (lr {lr:g})':>28}  {gone} of {len(cells)}")
    return "\n".join(lines)


def budgets(results: dict) -> list[int]:
    """The epochs at which the grid is read: ``BUDGETS``, capped at the epochs the runs trained."""
    return sorted({min(b, results["config"]["epochs"]) for b in BUDGETS})


def plot_lr(results: dict, outfile: Path) -> None:
    """Final test MSE against the learning rate, per optimizer and budget; and the one-step loss ratio."""
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(len(ranges), 3, figsize=(17, 4.4 * len(ranges)), squeeze=False)
    for row, r in zip(axes, ranges, strict=True):
        y = torch.tensor(dataset_of(results, r, results["config"]["seeds"][0])["y_test"]).var().item()
        for ax, optimizer in zip(row[:2], GRIDS, strict=True):
            for model in models_of(results):
                for epochs, style in zip(budgets(results), (":", "-"), strict=False):  # one budget when short
                    mse = [final_mse(results, r, model, optimizer, lr, epochs) for lr in GRIDS[optimizer]]
                    ax.plot(GRIDS[optimizer], [min(v, 1e4 * y) for v in mse], style, marker="o", ms=4,
                            color=COLOURS[model][0], lw=2, label=f"{label(model)}, {epochs} epochs")
            ax.axhline(0.5 * y, color="0.5", ls="--", lw=1, label="trains below: Var(y) / 2")
            ax.set(xscale="log", yscale="log", xlabel=f"{optimizer} learning rate", ylabel="final test MSE (median)",
                   title=f"{'Adam' if optimizer == 'adam' else 'plain SGD'}, x in {range_text(r)}")
            ax.legend(fontsize=7)
        ax = row[2]
        for model in models_of(results):
            entries = [e for e in results["one_step"] if e["range"][1] == r and e["model"] == model]
            ratios = torch.tensor([e["ratio"] for e in entries], dtype=torch.float64).clamp(max=1e6)
            ax.plot(entries[0]["alpha"], ratios.median(0).values, color=COLOURS[model][0], lw=2, label=label(model))
        ax.axhline(1.0, color="0.5", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="step size α", ylabel="L(θ − α·g) / L(θ)",
               title=f"One gradient step at initialisation, x in {range_text(r)}")
        ax.legend(fontsize=8)
    save(fig, outfile)


def lr_table(results: dict) -> str:
    config, epochs_read = results["config"], budgets(results)
    lines = [
        f"Learning rates {', '.join(f'{lr:g}' for lr in GRIDS['adam'])} for Adam and for SGD, {len(config['seeds'])} "
        f"seeds, {config['epochs']} epochs ({source(results)}). *Largest that trains*: every seed's test MSE "
        "below Var(y)/2 within the budget. *Best*: the grid's lowest median test MSE, and where.",
        "",
    ]
    rows = []
    for r in reversed(ranges_of(results)):
        for optimizer in GRIDS:
            for model in models_of(results):
                cells = []
                for epochs in epochs_read:
                    largest = largest_training_lr(results, r, model, optimizer, epochs)
                    lr, mse = best(results, r, model, optimizer, epochs)
                    cells += ["none" if largest is None else f"{largest:g}", f"{mse:.3g} (lr {lr:g})"]
                rows.append([range_text(r), label(model), optimizer, *cells])
    header = ("inputs", "net", "optimizer", *(f"{what}, {e} epochs" for e in epochs_read
                                              for what in ("largest lr that trains", "best")))
    return "\n".join([*lines, table(header, rows)])


def check_grid(results: dict) -> None:
    if "one_step" not in results or any("optimizer" not in x or "lr" not in x for x in results["runs"]):
        raise ValueError("the lr figures and table need its grid runs: rerun `python train.py lr`")


def largest_lr_per_seed(results: dict, r: float, model: str, optimizer: str, epochs: int) -> dict[int, float]:
    """Per seed, the largest learning rate of the grid at which that seed trains within ``epochs``; where
    none does, one grid step (half a decade) below the grid."""
    grid, out = GRIDS[optimizer], {}
    for seed in results["config"]["seeds"]:
        runs = [x for x in runs_of(results, r, model) if x["optimizer"] == optimizer and x["seed"] == seed]
        trained = [x["lr"] for x in runs if trains(results, x, epochs)]
        out[seed] = max(trained) if trained else grid[0] / math.sqrt(10)
    return out


def wider_rates(results: dict, r: float, optimizer: str, epochs: int) -> stats.SignCount:
    """Per seed, log10 of MyBN's largest rate that trains over the plain net's (decades: grid-valued),
    against 0: how many seeds lie above it, tied, below."""
    return decades(*(largest_lr_per_seed(results, r, m, optimizer, epochs) for m in ("my_bn", "plain")))


def lr_verdict(results: dict) -> Verdict:
    """Per range and optimiser, at each budget of ``budgets`` (the same runs read at epoch 10 and at their
    end): does MyBN train at larger rates of the grid than the plain net, seed by seed?"""
    measured, parts = [], []
    for epochs in budgets(results):
        cells = []
        for r in (HARD, EASY):
            for opt in GRIDS:
                count = wider_rates(results, r, opt, epochs)
                cells.append(f"{range_text(r)} {opt} {count.text('.2g')}")
                parts.append(Part(f"{range_text(r)} {opt} ({epochs} epochs)", f"decades, MyBN's largest training "
                                  f"rate over the plain net's, {range_text(r)} {opt}", count, WIDER,
                                  budget=f"{epochs} epochs"))
        measured.append(f"within {epochs} epochs: " + "; ".join(cells))
    rule = ("per seed, log10 of MyBN's largest training rate over the plain net's (in decades; the grid is half a "
            "decade apart) within the budget; a sign test of the seeds above 0, a tie counting against: holds "
            "where they are significantly many, does not hold where the seeds not above 0 are, else not decided; "
            f"each range and optimiser a part, at each budget ({len(results['config']['seeds'])} seeds; the same "
            "runs read at each)")
    return Verdict("Larger learning rates (Bjorck et al. 2018)", "BN nets still train at larger learning rates",
                   "decades, MyBN − plain, " + "; ".join(measured), rule, tuple(parts), "[lr](docs/lr.md)")


AS_WELL = 1.5  # "as well as MyBN": a final test MSE at most 1.5 times MyBN's
WIDER = stats.Rule(0.0, "above")  # decades, MyBN's largest training rate over the plain net's
AS_WELL_RULE = stats.Rule(math.log(AS_WELL), "below")  # log(plain / MyBN) of the best cells' test MSE
QUICK = stats.Rule(0.5, "above")  # per seed, 1 where some rate trains the plain net within the short budget, else 0
RULES = {"larger rates with MyBN": WIDER, "the plain net as well as MyBN": AS_WELL_RULE, "trains quickly": QUICK}


def trains_quickly(results: dict, optimizer: str, epochs: int) -> stats.SignCount:
    """Per seed, whether some rate of the grid trains the plain net on the hard range within ``epochs``
    (1) or none does (0), against ½: the sign test of "in most seeds" (a claim about the median seed)."""
    largest = largest_lr_per_seed(results, HARD, "plain", optimizer, epochs)
    return stats.sign_count([1.0 if lr >= GRIDS[optimizer][0] else 0.0 for _, lr in sorted(largest.items())], 0.5)


def objection_verdict(results: dict) -> Verdict:
    """Per optimiser: within the longest budget, does the plain net's best cell fit as well as MyBN's best
    (seed by seed, at the two cells), and does any rate train it within the shortest?"""
    short, long = budgets(results)[0], budgets(results)[-1]
    measured, parts = [], []
    for opt in GRIDS:
        (plain_lr, _), (bn_lr, _) = (best(results, HARD, m, opt, long) for m in ("plain", "my_bn"))
        values = {m: {x["seed"]: x["test_mse"][long] for x in cell(results, HARD, m, opt, lr_)}
                  for m, lr_ in (("plain", plain_lr), ("my_bn", bn_lr))}
        ci = stats.paired_log_ratio(*paired(values["plain"], values["my_bn"]))
        quick = trains_quickly(results, opt, short)
        measured.append(f"{opt}: best plain (lr {plain_lr:g}) / best MyBN (lr {bn_lr:g}) after {long} epochs "
                        f"{ci.ratio_text()}; some rate trains the plain net within {short} epochs in {quick.above} of "
                        f"{quick.n} seeds")
        parts += [Part(f"{opt}", f"final test MSE, plain / MyBN, each net's best cell, {opt}", ci, AS_WELL_RULE,
                       budget=f"{long} epochs", scale="log-ratio"),
                  Part(f"{opt} within {short} epochs", f"1 where some rate trains the plain net, else 0, {opt}",
                       quick, QUICK, budget=f"{short} epochs")]
    rule = (f"per seed, log(plain / MyBN) of the final test MSE in each net's best cell of the grid (lowest median); "
            f"holds where the interval lies below log {AS_WELL:g}, does not hold where it lies above; and whether "
            f"some rate trains the plain net within {short} epochs in most seeds (a sign test of the seeds where one "
            "does: holds where they are significantly many, does not hold where the seeds where none does are)")
    return Verdict("Objection: the plain net just needs another learning rate or more epochs",
                   "if so, some (lr, budget) of the grid trains the plain net as well as MyBN",
                   f"on {range_text(HARD)}: " + "; ".join(measured), rule, tuple(parts), "[lr](docs/lr.md)")


LrSettings = Regression.preset(
    "LrSettings", __name__, models=["plain", "my_bn"], epochs=100, device="cpu", seeds=TEN_SEEDS,
    drop={"lr": "it trains on a grid of learning rates (GRIDS)", "optimizer": "it trains with both, Adam and SGD",
          "diagnostics": "it records no diagnostics"},
    only={"mybn_backend": ("python", "its nets train under torch.func.vmap, where MyBN runs its Python backend"),
          "device": ("cpu", "it runs on the CPU"), "nproc": (1, "each ensemble trains in one process")},
)


EXPERIMENT = Experiment(
    name="lr",
    doc=__doc__,
    settings=LrSettings,
    run=run,
    figures=lambda results: {"lr.png": partial(plot_lr, results)},
    tables=lambda results: {"lr-table": lr_table(results)},
    check=check_grid,
    summary=summary_table,
    verdicts=lambda results: [lr_verdict(results), objection_verdict(results)],
)
