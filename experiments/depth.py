"""depth: a deep net at initialisation: does batch norm keep its representations' rank, and does it make
its gradients explode?

Two results about deep fully connected nets at initialisation pull in opposite directions:

- Daneshmand, Kohler, Bach, Hofmann & Lucchi 2020 ("Batch Normalization Provably Avoids Rank Collapse
  for Randomly Initialised Deep Networks"): "it is not surprising to find that the rank of the
  intermediate representations in unnormalized networks collapses quickly with depth. In this work we
  highlight the fact that batch normalization is an effective strategy to avoid rank collapse for both
  linear and ReLU networks."
- Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019 ("A Mean Field Theory of Batch
  Normalization"): "gradient signals grow exponentially in depth and [...] these exploding gradients
  cannot be eliminated by tuning the initial weight variances or by adjusting the nonlinear activation
  function. Indeed, batch normalization itself is the cause of gradient explosion."

``lab.nets.DeepMLP`` (``depth`` blocks of Linear(width, width) -> norm -> ReLU or identity, He or
unit-gain Gaussian weights, the same for both norms at a seed), plain and with ``MyBN``, in float64, on
a batch of Gaussian inputs N(0, I) of the width's dimension with random labels over 10 classes; one
forward and one backward of the cross-entropy, no training. For each width of ``widths``, batch size
of ``batch_sizes``, activation and seed: the effective rank of every block's output (``effective_rank``)
and the squared norm of every block's weight gradient, whose growth per layer towards the input is
fitted over the middle layers (``growth_rate``).

The large-batch rate for ReLU (``RELU_RATE``), derived here as in mean-field theory: with the batch
statistics taken as exact, a block's backward multiplies the mean squared gradient by σ_w² E[φ'(z)²]
/ Var(h) and Var(h) = σ_w² Var(φ(z)) with z ~ N(0, 1), so the rate is E[φ'(z)²] / Var(φ(z)) = (1/2) /
(1/2 − 1/(2π)) = π / (π − 1) ≈ 1.467 per layer, whatever σ_w; for the plain net with He weights it is
σ_w² E[φ'(z)²] = 2 · 1/2 = 1. A test checks the first by quadrature.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from experiments.record import Experiment, checked_runs
from lab import stats
from lab.nets import DeepMLP
from lab.pages import table
from lab.plotting import COLOURS, save, seeds_text, subplots
from lab.results import rounded, source
from lab.settings import TEN_SEEDS, Settings, batch_int, flag, positive_int, seed_int
from lab.verdicts import Part, Verdict, paired
from lab.workers import environment, run_pool

RELU_RATE = math.pi / (math.pi - 1)  # the squared gradient norm's growth per layer, ReLU with batch norm, B -> ∞
PREDICTED = 0.02  # "grows at the predicted rate": within 2% of RELU_RATE per layer (a factor 2.2 over 40 layers,
# against the ~10⁷ the explosion amounts to), an equivalence test on the log of the rate
SKIP = 5  # the growth rate is fitted over the layers (0-based, from the input) SKIP to depth − SKIP


@dataclass
class DepthSettings(Settings):
    """The depth experiment's settings: the nets and batches it looks at, its preset as the defaults."""

    depth: int = flag(50, f"blocks of each net (at least {2 * SKIP + 2}: the growth rate is fitted away from both "
                      "ends)", type=positive_int)
    widths: list[int] = flag([32, 128], "widths of the blocks", type=positive_int, metavar="WIDTH")
    batch_sizes: list[int] = flag([8, 64], "batch sizes", type=batch_int, metavar="B")
    activations: list[str] = flag(["relu", "linear"], "activations", metavar="ACTIVATION", choices=("relu", "linear"))
    limit: list[int] = flag([512, 256], "a width and a batch size large enough for the large-batch limit: MyBN's "
                            "ReLU net there (gradients only, no ranks) decides whether its growth per layer is the "
                            "predicted π/(π − 1)", type=positive_int, nargs=2, metavar="N")
    dtype: str = flag("float64", "float64 only")
    device: str = flag("cpu", "cpu only")
    seeds: list[int] = flag(TEN_SEEDS, "seeds: the random weights and batches", type=seed_int, metavar="SEED")

    ONLY: ClassVar[dict[str, tuple[object, str]]] = {
        "device": ("cpu", "it runs on the CPU"), "nproc": (1, "each measurement runs in one process"),
        "dtype": ("float64", "it measures ranks and gradients through many layers, in float64"),
        "mybn_backend": ("python", "its MyBN layers run the Python backend")}

    def problem(self) -> str | None:
        if self.depth < 2 * SKIP + 2:
            return (f"argument --depth: at least {2 * SKIP + 2} (the growth rate is fitted over blocks {SKIP + 1} to "
                    f"depth − {SKIP})")
        return super().problem()


def grid(results: dict) -> DepthSettings:
    return DepthSettings.from_record(results["config"])
LABELS = {"plain": "plain (no norm)", "my_bn": "MyBN"}


def effective_rank(h: torch.Tensor) -> float:
    """Roy & Vetterli's (2007) effective rank of the (N, width) matrix ``h``: exp of the entropy of its
    singular values normalised to sum to 1 (n for n equal singular values, 1 for a rank-one matrix)."""
    s = torch.linalg.svdvals(h.double())
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(-(p * p.log()).sum().item())


def growth_rate(grad_sq: list[float], fit: tuple[int, int] | None = None) -> float:
    """How many times the squared weight-gradient norm grows per layer towards the input: exp of minus
    the least-squares slope of log ‖∇W_l‖² against the layer l over ``fit`` (default: ``SKIP`` to depth − ``SKIP``)."""
    fit = (SKIP, len(grad_sq) - SKIP) if fit is None else fit
    layers = torch.arange(*fit, dtype=torch.float64)
    y = torch.tensor(grad_sq[fit[0]:fit[1]], dtype=torch.float64).log()
    slope = ((layers - layers.mean()) * (y - y.mean())).sum() / ((layers - layers.mean()) ** 2).sum()
    return math.exp(-slope.item())


def measure(config, job: tuple[str, str, int, int, bool]) -> list[dict]:
    """Every seed of one (norm, activation, width, batch size): the effective rank of each block's output
    (NaN: not measured, where not ``ranks``) and the squared norm of each block's weight gradient, at initialisation."""
    norm, activation, width, batch, ranks = job
    out = []
    for seed in config.seeds:
        gen = torch.Generator().manual_seed(10_000 + seed)  # the inputs and labels: the same for both norms
        x = torch.randn(batch, width, generator=gen, dtype=torch.float64)
        y = torch.randint(10, (batch,), generator=gen)
        net = DeepMLP(norm, seed, depth=config.depth, width=width, activation=activation, dtype=torch.float64)
        outputs, logits = net(x)
        nn.functional.cross_entropy(logits, y).backward()
        out.append({"model": norm, "activation": activation, "width": width, "batch_size": batch, "seed": seed,
                    "erank": rounded([effective_rank(h.detach()) if ranks else math.nan for h in outputs]),
                    "grad_sq": rounded([b.linear.weight.grad.pow(2).sum().item() for b in net.blocks])})
    return out


def jobs(config: DepthSettings) -> list[tuple[str, str, int, int, bool]]:
    """The grid (every norm, activation, width and batch size, ranks measured), and the large-batch cell
    first (the slowest: MyBN, ReLU, no ranks)."""
    cells = [(n, a, w, b, True) for n in DeepMLP.NORMS for a in config.activations for w in config.widths
             for b in config.batch_sizes]
    limit = ("my_bn", "relu", *config.limit)
    return cells if (*limit, True) in cells else [(*limit, False), *cells]


def run(config, log=print) -> dict:
    todo, runs = jobs(config), []
    with run_pool(config, len(todo)) as pool_map:
        for job, measured in zip(todo, pool_map(functools.partial(measure, config), todo), strict=True):
            runs += measured
            rate_ = math.exp(sum(map(log_rate, measured)) / len(measured))
            log(f"depth: {job[0]:<6} {job[1]:<6} width {job[2]:>3} batch {job[3]:>3}: gradient growth per layer "
                f"{rate_:.3f}" + (f", effective rank at depth {config.depth} "
                                  f"{sum(r['erank'][-1] for r in measured) / len(measured):.2f}" if job[4] else ""))
    return {"config": dataclasses.asdict(config), "environment": environment(config), "depth": config.depth,
            "datasets": [], "runs": runs}


def check_format(results: dict) -> None:
    for i, run_ in enumerate(checked_runs(results, DeepMLP.NORMS)):
        if any(len(run_.get(k, [])) != results.get("depth") for k in ("erank", "grad_sq")):
            raise ValueError(f"runs[{i}]: 'erank' and 'grad_sq' must hold one number per block of 'depth'")
    if not per_seed(results, "my_bn", "relu", *grid(results).limit, log_rate):
        raise ValueError("the depth verdict needs the large-batch cell (--limit): rerun `python train.py depth`")


# ---------------------------------------------------------------------------------------------- reading


def per_seed(results: dict, model: str, activation: str, width: int, batch: int, value) -> dict[int, float]:
    return {r["seed"]: value(r) for r in results["runs"] if (r["model"], r["activation"], r["width"],
                                                             r["batch_size"]) == (model, activation, width, batch)}


def last_rank(run_: dict) -> float:
    return run_["erank"][-1]


def log_rate(run_: dict) -> float:
    return math.log(growth_rate(run_["grad_sq"]))


def rank_ratio(results: dict, activation: str, width: int, batch: int) -> stats.Interval:
    """MyBN's effective rank at the last block over the plain net's, seed by seed (log-ratio)."""
    a, b = (per_seed(results, m, activation, width, batch, last_rank) for m in ("my_bn", "plain"))
    return stats.paired_log_ratio(*paired(a, b))


def rate(results: dict, model: str, width: int, batch: int, activation: str = "relu") -> stats.Interval:
    """The log of the fitted growth rate per layer of the squared gradient norm: mean and interval."""
    return stats.t_interval(list(per_seed(results, model, activation, width, batch, log_rate).values()))


def rate_gap(results: dict, width: int, batch: int) -> stats.Interval:
    """log(MyBN's growth rate / the plain net's), seed by seed, ReLU."""
    a, b = (per_seed(results, m, "relu", width, batch, log_rate) for m in ("my_bn", "plain"))
    return stats.paired_difference(*paired(a, b))


def off_prediction(results: dict) -> stats.Interval:
    """log(MyBN's growth per layer / π/(π − 1)), seed by seed, ReLU, in the large-batch cell (``limit``)."""
    return stats.t_interval([v - math.log(RELU_RATE) for v in
                             per_seed(results, "my_bn", "relu", *grid(results).limit, log_rate).values()])


def exp_text(ci: stats.Interval) -> str:
    return f"{math.exp(ci.mean):.3f} [{math.exp(ci.low):.3f}, {math.exp(ci.high):.3f}]"


# ---------------------------------------------------------------------------------------------- figure, tables


def plot_depth(results: dict, outfile: Path) -> None:
    """Per activation: the effective rank of each block's output against depth (top), and the squared
    weight-gradient norm per block (bottom, ReLU and linear); the widest net, each batch size."""
    settings, n, styles = grid(results), len(results["config"]["seeds"]), (":", "-", "--", "-.") * 4
    width = max(settings.widths)
    fig, axes = subplots(2, 2, figsize=(13, 9))
    layers = list(range(1, results["depth"] + 1))
    for col, activation in enumerate(settings.activations):
        for model in DeepMLP.NORMS:
            colour, _ = COLOURS[model]
            for batch, ls in zip(settings.batch_sizes, styles, strict=False):
                runs = [r for r in results["runs"] if (r["model"], r["activation"], r["width"], r["batch_size"])
                        == (model, activation, width, batch)]
                for key, ax in (("erank", axes[0][col]), ("grad_sq", axes[1][col])):
                    values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
                    centre = values.mean(0) if key == "erank" else values.log().mean(0).exp()
                    ax.plot(layers, centre, ls, color=colour, lw=2, label=f"{LABELS[model]}, batch {batch}")
        axes[0][col].set(xlabel="block", ylabel="effective rank of its output", yscale="log",
                         title=f"{activation}: rank of the representations, width {width}\nmean over {seeds_text(n)}")
        axes[1][col].set(xlabel="block (1: next to the input)", ylabel="‖∇W‖², geometric mean", yscale="log",
                         title=f"{activation}: squared weight-gradient norm per block, width {width}")
    for ax in axes.flat:
        ax.legend(fontsize=8)
    save(fig, outfile)


def depth_table(results: dict) -> str:
    n = len(results["config"]["seeds"])
    lines = [
        f"At initialisation, {results['depth']} blocks, {n} seeds ({source(results)}): the effective rank of the "
        f"last block's output (mean; at most min(batch, width)), MyBN / plain of it seed by seed, and the growth "
        "per layer of the squared weight-gradient norm towards the input, fitted over blocks "
        f"{SKIP + 1}-{results['depth'] - SKIP} "
        f"(geometric mean and 95% interval; mean-field theory for ReLU with batch norm, batch -> ∞: π/(π − 1) = "
        f"{RELU_RATE:.3f}; plain with He weights: 1).",
        "",
    ]
    settings, rows = grid(results), []
    for activation in settings.activations:
        for width in settings.widths:
            for batch in settings.batch_sizes:
                ranks = [stats.t_interval(list(per_seed(results, m, activation, width, batch, last_rank).values()))
                         for m in DeepMLP.NORMS]
                rates = [exp_text(rate(results, m, width, batch, activation)) for m in DeepMLP.NORMS]
                rows.append([activation, str(width), str(batch), *(f"{r.mean:.2f}" for r in ranks),
                             rank_ratio(results, activation, width, batch).ratio_text(), *rates])
    width, batch = settings.limit
    if ("relu", width, batch) not in {(a, w, b) for a in settings.activations for w in settings.widths
                                      for b in settings.batch_sizes}:
        rows.append(["relu", str(width), str(batch), "", "", "", "", exp_text(rate(results, "my_bn", width, batch))])
    lines += [table(("activation", "width", "batch", "rank, plain", "rank, MyBN", "MyBN / plain",
                     "growth per layer, plain", "growth per layer, MyBN"), rows), "",
              f"The large-batch cell (width {width}, batch {batch}; gradients only): MyBN's growth per layer over "
              f"π/(π − 1), seed by seed, {off_prediction(results).ratio_text('.4f')}."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- verdicts

KEEPS_RANK = stats.Rule(0.0, "above")  # log(MyBN's effective rank / the plain net's) at the last block
EXPLODES = stats.Rule(0.0, "above")  # log of MyBN's growth rate per layer; and of MyBN's over the plain net's
AT_PREDICTED = stats.Rule(math.log(1 + PREDICTED), "within")  # log(MyBN's growth rate / π/(π − 1)), large batch
RULES = {"MyBN keeps the rank": KEEPS_RANK, "MyBN's gradients explode": EXPLODES,
         "at the predicted rate": AT_PREDICTED}
PAGE = "[depth](docs/depth.md)"


def rank_verdict(results: dict) -> Verdict:
    settings, depth = grid(results), results["depth"]
    width, batch = max(settings.widths), max(settings.batch_sizes)
    cis = {a: rank_ratio(results, a, width, batch) for a in settings.activations}
    rule = (f"per seed, log(MyBN's effective rank / the plain net's) of block {depth}'s output, width {width}, batch "
            f"{batch}; holds where the interval lies above 0, does not hold where it lies below, else not decided; "
            "each activation a part")
    return Verdict("Batch norm keeps a deep net's rank at initialisation (Daneshmand et al. 2020)",
                   f"after {depth} random blocks the plain net's representations of a batch are close to rank one, "
                   "MyBN's are not", "MyBN / plain: " + "; ".join(f"{a} {ci.ratio_text()}" for a, ci in cis.items()),
                   rule, tuple(Part(a, f"log(MyBN's effective rank / the plain net's), {a}", ci, KEEPS_RANK,
                                    scale="log-ratio") for a, ci in cis.items()), PAGE)


def explosion_verdict(results: dict) -> Verdict:
    width, batch = max(grid(results).widths), max(grid(results).batch_sizes)
    own, gap, off = rate(results, "my_bn", width, batch), rate_gap(results, width, batch), off_prediction(results)
    large = "width {}, batch {}".format(*grid(results).limit)
    rule = (f"per seed, the log of MyBN's fitted growth per layer of the squared weight-gradient norm (explodes: "
            f"holds above 0), and minus the plain net's (more than plain: holds above 0); ReLU, width {width}, batch "
            f"{batch}; the opposite side does not hold, else not decided. At the predicted rate: at {large}, the log "
            f"of MyBN's growth over π/(π − 1); two one-sided tests, holds where the interval lies within "
            f"±log {1 + PREDICTED:g} ({PREDICTED:.0%} per layer), does not hold where it lies beyond an end, else not "
            "decided")
    return Verdict("Batch norm makes gradients explode with depth at initialisation (Yang et al. 2019)",
                   f"towards the input MyBN's squared gradient norm grows by a constant factor per layer, "
                   f"π/(π − 1) = {RELU_RATE:.3f} for ReLU in the large-batch limit (within {PREDICTED:.0%} at "
                   f"{large}); the plain net's (He) does not",
                   f"growth per layer, MyBN {exp_text(own)}, MyBN / plain {exp_text(gap)}; at {large}, MyBN / "
                   f"π/(π − 1) {off.ratio_text('.4f')}", rule,
                   (Part("explodes", "log of MyBN's growth per layer", own, EXPLODES, scale="log-ratio"),
                    Part("more than plain", "log of MyBN's growth per layer over the plain net's", gap, EXPLODES,
                         scale="log-ratio"),
                    Part(f"at the predicted rate ({large})", "log of MyBN's growth per layer over π/(π − 1)", off,
                         AT_PREDICTED, scale="log-ratio")), PAGE)


EXPERIMENT = Experiment(
    name="depth",
    doc=__doc__,
    settings=DepthSettings,
    run=run,
    figures=lambda results: {"depth.png": functools.partial(plot_depth, results)},
    tables=lambda results: {"depth-table": depth_table(results)},
    results_format=check_format,
    summary=depth_table,
    verdicts=lambda results: [rank_verdict(results), explosion_verdict(results)],
)
