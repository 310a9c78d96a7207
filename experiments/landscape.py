"""landscape: is the loss smoother with batch norm? Santurkar et al. (2018, §3.2, Appendix A.2.2).

About ``PROBES`` times a run, at evenly spaced steps, with g the gradient on the step's batch, the
probe moves the parameters to θ − η·g for each η of ``FACTORS`` times a base step (½ to 4 times, as
in the paper) and measures, on the same batch:

- the spread of the loss: the lowest and highest L(θ − η·g);
- gradient predictiveness: ‖∇L(θ) − ∇L(θ − η·g)‖, its lowest and highest over η;
- effective β-smoothness: the highest over η of ‖∇L(θ) − ∇L(θ − η·g)‖ / ‖η·g‖;

and the norm of each block's Linear weight. Batch norm makes a block's output the same whatever the
scale of the weight before it, so β-smoothness in parameter space depends on that norm (it scales
as 1/‖W‖² for such a weight): the norms are recorded to read the measures against. And the verdict
compares the nets at the same training loss and weight norms: MyBN trains after the plain net, and
its probe reads it a second time with each block's Linear rescaled to the weight norms of the plain
net's probe nearest in training loss (``at_norms``: the same function in the plain net's
parametrisation); a pair counts where the two losses are within ``LOSS_MATCH`` (``matched``).

Gradients are over all parameters. Batch norm runs in training mode on the probing batch, with its
running statistics put back after the probe, as are the parameters and the optimiser's state
(``probe.preserved``): a run with probes trains exactly like one without.

Three settings (``SETTINGS``), per range:

- *SGD at the edge*: plain SGD for the preset's 50 epochs (800 steps; the budget allows no more) at
  ``LR``, the largest rate of the lr experiment's SGD grid at which every seed of both nets trains
  within 100 epochs (tests/test_readme.py checks that against the lr results); the probe's base step
  is that rate. The plain net's β then sits near 2/η, the edge of stability: SGD may be tuning the
  sharpness to its rate, whatever the landscape would be;
- *SGD at a tenth*: the same at a tenth of that rate, away from the edge; base step its rate;
- *the Adam recipe*: the main experiment's Adam at lr 0.02 for 10 epochs (160 steps), the recipe the
  README's short answer is about; Adam's step is not η·g, so the probe's base step is the SGD rate
  of ``LR``: the same distances along the gradient as at the edge.

``--lr`` replaces ``LR`` for every range (a range without an entry in ``LR`` needs it); each run
records the rate it trained at, and the results' config the one given (null: the rates of ``LR``).
The SGD runs are ``runs``; the Adam recipe's, 10 epochs long, are ``recipe``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from experiments.record import Experiment, runs_with
from lab import stats
from lab.loop import steps_per_epoch
from lab.pages import table
from lab.plotting import band, label, plain_log_ticks, range_text, save, stacked, subplots
from lab.probe import Probe, Step, every, preserved
from lab.regression import Regression, dataset_entry, models_of, ranges_of, runs_of, train_run
from lab.results import rounded, source
from lab.settings import TEN_SEEDS
from lab.verdicts import EASY, HARD, Part, Verdict, ratio
from lab.workers import environment, run_pool

LR = {5.0: 0.03, 1.0: 0.3}  # plain SGD learning rate per input range R
MATCH = {"my_bn": "plain"}  # a batch-normalised net -> the net at whose training loss and weight norms it is read again
MATCHED = "_matched"  # the suffix of a measure read at the matched norms
MATCHED_KEYS = ("gdiff_max" + MATCHED, "beta" + MATCHED)
FACTORS = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]  # the step sizes probed, times the base step
PROBES = 24  # about this many probes a run (every steps // PROBES steps from the first: 25 to 27 here)
EVERY = 33  # steps between probes of a probe made without a schedule: 24 in 50 epochs of 16 steps
TENTH = 0.1  # the second SGD setting's rate, as a fraction of LR
RECIPE = (Regression().lr, Regression().epochs)  # the main experiment's Adam recipe: learning rate and epochs
SETTINGS = {  # name -> which runs: the SGD runs at each rate (by "factor"), and the recipe's
    "SGD at the edge": lambda results: [r for r in results["runs"] if r["factor"] == 1.0],
    f"SGD at {TENTH:g}×": lambda results: [r for r in results["runs"] if r["factor"] == TENTH],
    "Adam recipe": lambda results: results["recipe"],
}
MEASURES = {
    "loss_spread": "loss spread: max − min of L(θ − ηg)",
    "gdiff_max": "‖∇L(θ) − ∇L(θ − ηg)‖, max over η",
    "beta": "effective β-smoothness",
}


class LandscapeProbe(Probe):
    """The three measures along the gradient direction, every ``EVERY`` steps."""

    name = "landscape"

    def __init__(self, net: nn.Module, data=None, config=None, base: float | None = None, steps: int = EVERY,
                 match: dict | None = None):
        """``base``: the step the factors multiply (default: the run's learning rate); ``steps``: between probes;
        ``match``: another net's probe records (its "loss" and "weight_norm" at each probe): at each probe the
        measures are read a second time, at the weight norms of that net's probe nearest in training loss
        (``at_norms``), whose index ``pair`` records."""
        self.net, self.base, self.steps, self.match = net, config.lr if base is None else base, steps, match
        keys = ("step", "loss", "loss_min", "loss_max", "gdiff_min", "gdiff_max", "beta", "weight_norm")
        self.records: dict[str, list] = {k: [] for k in keys + (("pair", *MATCHED_KEYS) if match else ())}

    def wants(self, step: Step) -> bool:
        return every(self.steps, step)

    def measure(self, step: Step, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        self.records["step"].append(step.number)
        etas = [f * self.base for f in FACTORS]
        for key, value in landscape_of(self.net, x, y, opt, etas).items():
            self.records[key].append(value)
        self.records["weight_norm"].append([b.linear.weight.norm().item() for b in self.net.blocks])
        if self.match:
            pair = nearest_loss(self.records["loss"][-1], self.match["loss"])
            matched = at_norms(self.net, x, y, opt, etas, self.match["weight_norm"][pair])
            self.records["pair"].append(pair)
            for key in MATCHED_KEYS:
                self.records[key].append(matched[key.removesuffix(MATCHED)])

    def results(self) -> dict:
        return {"factors": FACTORS, "base": self.base, "every": self.steps,
                **{k: rounded(v) if k not in ("step", "pair") else v for k, v in self.records.items()}}


def flat_grad(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double()


def landscape_of(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, etas: list[float]) -> dict[str, float]:
    """Loss and gradient along θ − η·g for each η; ``net`` holds this step's gradient g, and it, its
    buffers and ``opt`` are left exactly as they were."""
    g = flat_grad(net)
    grads = [p.grad.detach().clone() for p in net.parameters()]
    losses, diffs, betas = [], [], []
    with preserved(net, opt) as theta:
        loss0 = nn.functional.mse_loss(net(x), y).item()  # this step's loss (running statistics put back)
        for eta in etas:
            with torch.no_grad():
                for p, p0, gp in zip(net.parameters(), theta, grads, strict=True):
                    torch.add(p0, gp, alpha=-eta, out=p.data)
            net.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            diff = (g - flat_grad(net)).norm().item()
            losses.append(loss.item())
            diffs.append(diff)
            betas.append(diff / max(eta * g.norm().item(), 1e-300))
    return {"loss": loss0, "loss_min": min(losses), "loss_max": max(losses), "gdiff_min": min(diffs),
            "gdiff_max": max(diffs), "beta": max(betas)}


def at_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, etas: list[float],
             norms: list[float]) -> dict[str, float]:
    """``landscape_of`` with each block's Linear (weight and bias) rescaled so that its weight has the norm
    ``norms`` gives it, the gradient taken there: for a net whose blocks normalise what their Linear computes
    (batch norm), the same function in another parametrisation, which is what β-smoothness in parameter space
    depends on (it scales as 1/‖W‖²). ``net``, its gradient, buffers and ``opt`` are left as they were."""
    with preserved(net, opt):
        with torch.no_grad():
            for block, norm in zip(net.blocks, norms, strict=True):
                scale = norm / block.linear.weight.norm()
                block.linear.weight.mul_(scale)
                block.linear.bias.mul_(scale)
        net.zero_grad(set_to_none=True)
        nn.functional.mse_loss(net(x), y).backward()
        return landscape_of(net, x, y, opt, etas)


def nearest_loss(loss: float, losses: list[float]) -> int:
    """The index of the loss of ``losses`` nearest ``loss`` in ratio (the first of equals)."""
    return min(range(len(losses)), key=lambda i: abs(math.log(losses[i] / loss)))


def as_own_match(run_: dict) -> dict:
    """A run read at no other net's loss and norms, given the records a matched run has (every run of a
    results file has one shape): each probe its own pair, its measures its own."""
    ls = run_["landscape"]
    return {**run_, "landscape": {**ls, "pair": list(range(len(ls["step"]))),
                                  **{key: ls[key.removesuffix(MATCHED)] for key in MATCHED_KEYS}}}


def landscape_run(config, job: tuple) -> dict:
    """One run: ``job`` is (factor, range, net, seed, match), the factor of the range's SGD rate (0: the Adam
    recipe), and for a batch-normalised net the plain net's probe records in the same setting and seed, at
    which the probe reads it a second time (``LandscapeProbe``; None: no second reading)."""
    factor, r, model, seed, match = job
    edge = LR[r] if config.lr is None else config.lr
    if factor:
        run_config = Regression(**{**dataclasses.asdict(config), "optimizer": "sgd", "lr": factor * edge})
    else:
        lr, epochs = RECIPE
        run_config = Regression(**{**dataclasses.asdict(config), "optimizer": "adam", "lr": lr,
                                   "epochs": min(epochs, config.epochs)})
    steps = run_config.epochs * steps_per_epoch(config.batch_size)
    probe = partial(LandscapeProbe, base=run_config.lr if factor else edge, steps=max(1, steps // PROBES), match=match)
    run_ = train_run(run_config, (r, model, seed), probe=probe)
    return {**run_, "optimizer": run_config.optimizer, "lr": run_config.lr, **({"factor": factor} if factor else {})}


def run(config, log=print) -> dict:
    """Every (setting, range, net, seed) in the worker pool: the SGD runs at each rate, then the recipe's;
    MyBN's after the plain net's, whose probe records its second reading is matched to."""
    jobs = [(factor, r, model, s) for factor in (1.0, TENTH, 0.0) for r in config.ranges for model in config.models
            for s in config.seeds]
    matched = [job for job in jobs if job[2] in MATCH and MATCH[job[2]] in config.models]
    done = {}
    with run_pool(config, len(jobs)) as pool_map:
        for batch in ([job for job in jobs if job not in matched], matched):
            other = {job: done[job[0], job[1], MATCH[job[2]], job[3]]["landscape"] for job in batch if job in matched}
            full = [(*job, {k: other[job][k] for k in ("loss", "weight_norm")} if job in other else None)
                    for job in batch]
            for job, run_ in zip(batch, pool_map(partial(landscape_run, config), full), strict=True):
                done[job] = run_
                if job[3] == config.seeds[-1]:
                    log(f"landscape: {run_['optimizer']} lr {run_['lr']:g}, range (-{job[1]:g}, {job[1]:g}), {job[2]}")
    runs = [done[job] if job in matched or not matched else as_own_match(done[job]) for job in jobs]
    datasets = [dataset_entry(config, r, s) for r in config.ranges for s in config.seeds]
    return {"config": dataclasses.asdict(config), "environment": environment(config), "datasets": datasets,
            "runs": [r for r in runs if "factor" in r], "recipe": [r for r in runs if "factor" not in r]}


def view(results: dict, setting: str) -> dict:
    """The results with the runs of one of ``SETTINGS`` as their runs."""
    return {**results, "runs": SETTINGS[setting](results)}


def measure(run_: dict, key: str) -> list[float]:
    ls = run_["landscape"]
    if key == "loss_spread":
        return [hi - lo for lo, hi in zip(ls["loss_min"], ls["loss_max"], strict=True)]
    return ls[key]


def plot_landscape(results: dict, outfile: Path) -> None:
    """The three measures along training, per range, for SGD at the edge."""
    edge = view(results, "SGD at the edge")
    ranges = list(reversed(ranges_of(edge)))
    fig, axes = subplots(len(ranges), len(MEASURES), figsize=(5 * len(MEASURES), 3.8 * len(ranges)), squeeze=False)
    for row, r in zip(axes, ranges, strict=True):
        for ax, (key, title) in zip(row, MEASURES.items(), strict=True):
            for model in models_of(edge):
                runs = runs_of(edge, r, model)
                band(ax, runs[0]["landscape"]["step"], stacked(runs, lambda run_, key=key: measure(run_, key)), model)
            ax.set(yscale="log", xlabel="training step",
                   title=f"{title}\nx in {range_text(r)}, SGD lr {runs_of(edge, r, model)[0]['lr']:g}")
        row[0].legend(fontsize=8)
    save(fig, outfile)


def block_norm(run_: dict) -> list[float]:
    """Along training: the norm of the Linear weights of blocks 2..4 (those with a block below), mean over them."""
    return [sum(norms[1:]) / len(norms[1:]) for norms in run_["landscape"]["weight_norm"]]


def plot_settings(results: dict, outfile: Path) -> None:
    """Per setting (columns) and range: β-smoothness along training, and the weight norms it depends on."""
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(2 * len(ranges), len(SETTINGS), figsize=(5 * len(SETTINGS), 3.4 * 2 * len(ranges)),
                         squeeze=False)
    for col, setting in enumerate(SETTINGS):
        part = view(results, setting)
        for i, r in enumerate(ranges):
            for row, (value, what, unit) in enumerate(
                    ((lambda run_: measure(run_, "beta"), "effective β-smoothness", "β (log scale)"),
                     (block_norm, "‖W‖, blocks 2–4 (mean)", "‖W‖ (log scale)"))):
                ax = axes[2 * i + row][col]
                for model in models_of(part):
                    runs = runs_of(part, r, model)
                    band(ax, runs[0]["landscape"]["step"], stacked(runs, value), model)
                lr = runs_of(part, r, models_of(part)[0])[0]["lr"]
                ax.set(yscale="log", xlabel="training step", ylabel=unit,
                       title=f"{what}\n{setting} (lr {lr:g}), x in {range_text(r)}")
                plain_log_ticks(ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=10)
    save(fig, outfile, top=0.98)


def summary(results: dict, r: float, model: str, key: str) -> float:
    """The median over training of a measure, mean over seeds."""
    runs = runs_of(results, r, model)
    return sum(median_of(run_, key) for run_ in runs) / len(runs)


MARGIN = 0.9  # "smoother" means at least 10% lower: a few percent is within the spread over seeds
SMOOTHER = stats.Rule(math.log(MARGIN), "below")  # log(MyBN / plain) of a measure
RULES = {"smoother with MyBN": SMOOTHER}
VERDICT_MEASURES = {"gdiff_max": "gradient change", "beta": "β-smoothness"}


LOSS_MATCH = 1.25  # a MyBN probe is at the plain net's training loss where the two losses are within this factor


def median_of(run_: dict, key: str) -> float:
    """One run's median over training of a measure."""
    return float(torch.tensor(measure(run_, key)).median())


def smoother(results: dict, r: float, setting: str = "SGD at the edge") -> dict[str, stats.Interval]:
    """Per measure of ``VERDICT_MEASURES``, in ``setting``: the paired log-ratio MyBN / plain of the median
    over training, each net in its own weights (the table's description; the verdict reads ``matched``)."""
    part = view(results, setting)
    return {key: ratio(part, r, "my_bn", "plain", lambda run_, key=key: median_of(run_, key))
            for key in VERDICT_MEASURES}


def matched_logs(bn: dict, plain: dict, key: str) -> list[float]:
    """log(MyBN / plain) of a measure at each of MyBN's probes (``bn``, its records) at the plain net's
    training loss: MyBN read at the weight norms of the plain net's probe nearest in loss (its ``pair``),
    where the two losses are within ``LOSS_MATCH``, against the plain net's measure at that probe."""
    return [math.log(bn[key + MATCHED][i] / plain[key][j]) for i, j in enumerate(bn["pair"])
            if abs(math.log(bn["loss"][i] / plain["loss"][j])) <= math.log(LOSS_MATCH)]


def matched(results: dict, r: float, setting: str) -> tuple[dict[str, stats.Interval], list[int]]:
    """Per measure of ``VERDICT_MEASURES``, in ``setting``: per seed, the median over MyBN's probes at the
    plain net's training loss and weight norms (``matched_logs``) of log(MyBN / plain), and its t-interval
    over the seeds that have such a probe (none: no interval, which decides nothing); and per seed, how many
    probes it has."""
    part = view(results, setting)
    bn, plain = ({run_["seed"]: run_["landscape"] for run_ in runs_of(part, r, m)} for m in ("my_bn", "plain"))
    seeds = sorted(bn.keys() & plain.keys())
    counts = [len(matched_logs(bn[s], plain[s], "beta")) for s in seeds]
    out = {}
    for key in VERDICT_MEASURES:
        medians = [statistics.median(x) for x in (matched_logs(bn[s], plain[s], key) for s in seeds) if x]
        out[key] = stats.t_interval(medians) if medians else stats.Interval(math.nan, math.nan, math.nan, 0)
    return out, counts


def landscape_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"Probes at η = {', '.join(f'{f:g}' for f in FACTORS)} × the base step, about {PROBES} a run; the median over "
        f"training, mean over {len(config['seeds'])} seeds ({source(results)}). The SGD settings train "
        f"{config['epochs']} epochs, their base step is their rate; the Adam recipe trains {RECIPE[1]} epochs at lr "
        f"{RECIPE[0]:g}, its base step the range's SGD rate at the edge. ‖W‖: the norm of the Linear weights of "
        "blocks 2–4, mean over them, at the first probe → at the last. Below each pair, MyBN / plain of the "
        "measures, each net in its own weights: the geometric mean of the per-seed ratios and its 95% interval.",
        "",
    ]
    rows = []
    for setting in SETTINGS:
        part = view(results, setting)
        for r in reversed(ranges_of(part)):
            for model in models_of(part):
                runs = runs_of(part, r, model)
                final = sum(run_["test_mse"][-1] for run_ in runs) / len(runs)
                cells = [f"{summary(part, r, model, key):.3g}" for key in MEASURES]
                norms = [sum(block_norm(run_)[k] for run_ in runs) / len(runs) for k in (0, -1)]
                rows.append([setting, range_text(r), f"{runs[0]['lr']:g}", label(model), f"{final:.4g}", *cells,
                             f"{norms[0]:.3g} → {norms[1]:.3g}"])
            per = smoother(results, r, setting)
            rows.append([setting, range_text(r), "", "*MyBN / plain*", "",
                         *(per[key].ratio_text() if key in per else "" for key in MEASURES), ""])
    lines.append(table(("setting", "inputs", "lr", "net", "final test MSE", *MEASURES.values(), "‖W‖"), rows))
    if {"plain", "my_bn"} <= set(models_of(results)):
        lines += ["", matched_table(results)]
    return "\n".join(lines)


def matched_table(results: dict) -> str:
    """What the verdict reads: MyBN / plain at matched training loss and weight norms, per setting and range."""
    lines = [
        f"What the verdict reads: MyBN / plain at the plain net's training loss and weight norms. At each probe "
        f"MyBN is read a second time with each block's Linear rescaled to the weight norms of the plain net's "
        f"probe nearest in training loss (the same function: batch norm undoes the scale); a probe counts where "
        f"the two losses are within ×{LOSS_MATCH:g}. Per seed, the median over those probes of the log-ratio; the "
        "geometric mean over the seeds that have one and its 95% interval. *Probes*: per seed, how many (lowest–"
        "highest over seeds).",
        "",
    ]
    rows = []
    for setting in SETTINGS:
        for r in reversed(ranges_of(view(results, setting))):
            per, counts = matched(results, r, setting)
            rows.append([setting, range_text(r), f"{sum(c > 0 for c in counts)} of {len(counts)}",
                         f"{min(counts)}–{max(counts)}", *(per[key].ratio_text() for key in VERDICT_MEASURES)])
    return "\n".join([*lines, table(("setting", "inputs", "seeds", "probes", *VERDICT_MEASURES.values()), rows)])


def landscape_verdict(results: dict) -> Verdict:
    measured, parts = [], []
    for setting in SETTINGS:
        for r in (HARD, EASY):
            per, counts = matched(results, r, setting)
            where = f"{setting}, {range_text(r)}"
            measured.append(f"{where}: " + ", ".join(f"{VERDICT_MEASURES[k]} {ci.ratio_text()}"
                                                     for k, ci in per.items())
                            + (f" ({sum(c > 0 for c in counts)} seeds)" if not all(counts) else ""))
            parts += [Part(f"{where}: {VERDICT_MEASURES[k]}", f"log(MyBN / plain) of the {VERDICT_MEASURES[k]} at the "
                           f"plain net's training loss and weight norms, {where}", ci, SMOOTHER, scale="log-ratio")
                      for k, ci in per.items()]
    rule = (f"per seed, the median over MyBN's probes at the plain net's training loss (within ×{LOSS_MATCH:g} of "
            "the plain probe nearest in loss) of log(MyBN / plain) of each measure, MyBN read with each block's "
            "weights rescaled to that plain probe's norms (the same function; β in parameter space scales as "
            f"1/‖W‖²); holds where the interval lies below log {MARGIN:g} (at least 10% lower with MyBN), does not "
            "hold where it lies above, else not decided; each measure, setting and range a part "
            f"({len(results['config']['seeds'])} seeds, those with such a probe)")
    return Verdict("A smoother landscape (Santurkar et al. 2018, §3.2)",
                   "along the gradient, the loss and its gradient change less with BN (both nets in the same setting: "
                   "SGD at the plain net's edge of stability, at a tenth of that rate, and the Adam recipe; compared "
                   "at the same training loss and weight norms)",
                   "MyBN / plain: " + "; ".join(measured), rule, tuple(parts),
                   "[landscape](docs/landscape.md)")


def check_runs(results: dict) -> None:
    """Its runs and the recipe's, each with the probe's records."""
    if not isinstance(results.get("recipe"), list) or not results["recipe"]:
        raise ValueError("the landscape figures and table need the Adam recipe's runs: rerun "
                         "`python train.py landscape`")
    for part in ("runs", "recipe"):
        runs_with(("landscape", "lr"), "its probe's runs")({**results, "runs": results[part]})
    if any("weight_norm" not in run_["landscape"] for run_ in (*results["runs"], *results["recipe"])):
        raise ValueError("the landscape figures and table need the weight norms: rerun `python train.py landscape`")
    if {"plain", "my_bn"} <= set(models_of(results)) and any(
            "pair" not in run_["landscape"] for run_ in (*results["runs"], *results["recipe"])):
        raise ValueError("the landscape verdict needs MyBN read at the plain net's training loss and weight norms: "
                         "rerun `python train.py landscape`")
    if any(run_.get("factor") not in (1.0, TENTH) for run_ in results["runs"]):
        raise ValueError(f"each of its SGD runs needs a 'factor' of its range's rate, 1 or {TENTH:g}: rerun "
                         "`python train.py landscape`")


_Landscape = Regression.preset("_Landscape", __name__, models=["plain", "my_bn"], epochs=50, diagnostics=False,
                               seeds=TEN_SEEDS,
                               lr=None, drop={"optimizer": "each setting has its own (SETTINGS)"})  # None: LR's rates


@dataclass
class LandscapeSettings(_Landscape):
    def problem(self) -> str | None:
        """A range with no learning rate of its own in ``LR`` and none given; then the regression task's checks."""
        missing = [r for r in self.ranges if self.lr is None and r not in LR]
        if missing:
            return (f"argument --lr: landscape has no learning rate of its own for R = {missing[0]:g} (only "
                    f"{sorted(LR)})")
        return super().problem()


EXPERIMENT = Experiment(
    name="landscape",
    doc=__doc__,
    settings=LandscapeSettings,
    run=run,
    figures=lambda results: {"landscape.png": partial(plot_landscape, results),
                             "landscape_settings.png": partial(plot_settings, results)},
    tables=lambda results: {"landscape-table": landscape_table(results)},
    summary=landscape_table,  # what train.py prints when the runs are done
    check=check_runs,
    verdicts=lambda results: [landscape_verdict(results)],
)
