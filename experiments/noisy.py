"""noisy: Santurkar et al.'s (2018) test of the covariate-shift explanation. If batch norm worked by
keeping each layer's input distribution steady, a net whose distributions are made to move on
purpose should lose its benefit. Their Algorithm 1 adds noise whose mean and scale change every step
(``lab.nets.NonStationaryNoise``) after each batch-norm layer; the plain net gets the same noise
after each Linear, so that the noise itself is controlled for.

Where the noise goes: after γ/β, on the layer's output, just before the tanh. That is the input
distribution of the next nonlinearity, the one the covariate-shift explanation is about, and
there the noise cannot be undone by the layer itself (before γ/β, γ would scale it with the
signal). Only in training, like dropout: the test MSE is measured without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from experiments import ics
from experiments.record import Experiment, runs_with
from lab import stats
from lab.diagnostics import SATURATED, start_end
from lab.pages import table
from lab.plotting import label, mse_panel, range_text, saturation_panel, save, subplots
from lab.regression import Regression, final_mse, models_of, ranges_of, run_with_longer, runs_of, summarize
from lab.results import at_budget, budgets, longer_lists, source
from lab.settings import TEN_SEEDS, flag, positive_int
from lab.verdicts import HARD, Part, Verdict, paired, per_budget, per_seed, versus


def plot_noisy(results: dict, outfile: Path) -> None:
    """Per range: test MSE, and the saturation of the last block, with and without the noise."""
    ranges = list(reversed(ranges_of(results)))
    fig, axes = subplots(len(ranges), 2, figsize=(13, 4.4 * len(ranges)), squeeze=False)
    for (ax_mse, ax_sat), r in zip(axes, ranges, strict=True):
        models = models_of(results)
        mse_panel(ax_mse, results, r, models)
        saturation_panel(ax_sat, results, r, models, f"Saturation of the last hidden block, x in {range_text(r)}")
        ax_mse.legend(fontsize=7)
    save(fig, outfile)


def noisy_table(results: dict) -> str:
    config = results["config"]
    lines = [
        f"{config['epochs']} epochs, mean ± std over {len(config['seeds'])} seeds ({source(results)}); *× MyBN*: "
        "the net's final test MSE over MyBN's, seed by seed: the geometric mean of the ratios and its 95% t-interval; "
        f"saturation is the fraction of units with |tanh| > {SATURATED} in the last block's training batch, mean "
        "over seeds, at the first step → at the last.",
        "",
    ]
    rows = [[range_text(row["range"]), label(row["model"]), f"{row['mean']:.4g} ± {row['std']:.2g}",
             versus(results, row["range"], row["model"], "my_bn"), f"{row['mean'] / row['noise_floor']:.3g}",
             start_end(runs_of(results, row["range"], row["model"]), "saturation", -1, ".2f")]
            for row in sorted(summarize(results), key=lambda row: -row["range"])]
    lines.append(table(("inputs", "net", "final test MSE", "× MyBN", "final / noise floor", "saturation, block 4"),
                       rows))
    for epochs in budgets(results)[1:]:
        view = at_budget(results, epochs)
        cells = ", ".join(f"{label(m)} {versus(view, HARD, m, 'my_bn')}" for m in VERDICT_MODELS[1:])
        lines += ["", f"Trained {epochs} epochs (the nets the verdict compares, on {range_text(HARD)}), the final test "
                  f"MSE over MyBN's, seed by seed: {cells}."]
    return "\n".join(lines)



TAKES_HALF = stats.Rule(0.0, "above")  # log(MyBN + noise / MyBN) − ½·log(plain / MyBN)
RAISES = stats.Rule(0.0, "above")  # log(MyBN + noise / MyBN) of a reading of ICS
RULES = {"the noise takes half the gain": TAKES_HALF, "the noise raises ICS": RAISES}


VERDICT_MODELS = ("my_bn", "my_bn_noisy", "plain")  # the nets the verdict compares, on (-5, 5)


def manipulation(shift: dict, epochs: int) -> dict[str, dict[str, stats.Interval]]:
    """The manipulation check, from the ics experiment's runs on (-5, 5) at ``epochs``: per window (the
    first epoch, the same at every budget, so read at the preset's only; the whole run) and reading of
    ICS, the paired log-ratio MyBN + noise / MyBN; nothing where the ics runs lack that budget."""
    if epochs not in budgets(shift):
        return {}
    view = at_budget(shift, epochs)
    if not all(runs_of(view, HARD, model) for model in ("my_bn_noisy", "my_bn")):
        return {}
    windows = {"whole run": None}
    if epochs == shift["config"]["epochs"]:
        windows = {"first epoch": ics.steps_per_epoch(shift), **windows}
    return {window: ics.readings(view, HARD, last, "my_bn_noisy", "my_bn") for window, last in windows.items()}


def noisy_verdict(results: dict, shift: dict) -> Verdict:
    """The cost of the noise to MyBN, seed by seed, against half of what batch norm gains over the plain
    net; beside it, whether the noise raised MyBN's ICS at all (``manipulation``); at each budget."""
    def read(view: dict, budget: str) -> tuple[str, list[Part]]:
        noisy, bn, plain = (per_seed(view, HARD, m, final_mse) for m in ("my_bn_noisy", "my_bn", "plain"))
        seeds = sorted(noisy.keys() & bn.keys() & plain.keys())
        if not seeds:
            return "", []
        cost = stats.paired_log_ratio(*paired(noisy, bn))  # what the noise costs MyBN
        gain = stats.paired_log_ratio(*paired(plain, bn))  # what batch norm gains over the plain net
        # per seed: log(noisy / MyBN) − ½·log(plain / MyBN), below 0 when the noise costs less than half the gain
        excess = stats.t_interval([math.log(noisy[s] / bn[s]) - 0.5 * math.log(plain[s] / bn[s]) for s in seeds])
        raised = manipulation(shift, view["config"]["epochs"])
        parts = [Part(f"the noise takes half the gain ({budget})", "log(MyBN + noise / MyBN) − ½·log(plain / MyBN) "
                      "of the final test MSE", excess, TAKES_HALF, budget)]
        parts += [Part(f"the noise raises MyBN's ICS, {window}, {ics.READINGS[k]} ({budget})",
                       f"log(MyBN + noise / MyBN) of {ics.READINGS[k]}, {window}", ci, RAISES, budget,
                       scale="log-ratio")
                  for window, cis in raised.items() for k, ci in cis.items()]
        measured = (f"final test MSE: the noise costs MyBN {cost.ratio_text()}; batch norm gains {gain.ratio_text()} "
                    "over the plain net (plain / MyBN)"
                    + "".join(f"; ICS, MyBN + noise / MyBN, {window}: "
                              + ", ".join(f"{ics.READINGS[k]} {ci.ratio_text()}" for k, ci in cis.items())
                              for window, cis in raised.items()))
        return measured, parts

    measured, parts = per_budget(results, read)
    rule = ("per seed, log(MyBN + noise / MyBN) − ½·log(plain / MyBN); holds (the noise costs at least half of batch "
            "norm's gain in log MSE) where the interval lies above 0, does not hold where it lies below 0; the "
            "manipulation check, per seed log(MyBN + noise / MyBN) of each ICS reading (as in the ics row), holds "
            "where its interval lies above 0; at each budget (the first epoch's reading once: it is the same "
            "epoch at every budget)")
    return Verdict("ICS, tested by injecting it (Santurkar et al. 2018, Alg. 1)",
                   "if steady distributions are what helps, BN with non-stationary noise should train like the plain "
                   "net", f"on {range_text(HARD)}, " + measured, rule, parts, "[noisy](docs/noisy.md)")


_Noisy = Regression.preset("_Noisy", __name__, models=["my_bn", "my_bn_noisy", "plain", "plain_noisy"],
                           seeds=TEN_SEEDS)


@dataclass
class NoisySettings(_Noisy):
    long_epochs: list[int] = flag([30], "longer budgets, in epochs: the runs the verdict reads (MyBN with and "
                                  "without the noise and the plain net, on (-5, 5)) train at each too; none: "
                                  "--long-epochs alone", type=positive_int, nargs="*", metavar="E")


def run(config: NoisySettings, log=print) -> dict:
    """Every (range, net, seed) at the settings' epochs; and at each of ``long_epochs`` the runs the verdict
    reads, in the results' ``longer`` (``regression.run_with_longer``)."""
    return run_with_longer(config, log, None, HARD, VERDICT_MODELS)


def check_runs(results: dict) -> None:
    """Every run (the longer budgets' too) with its diagnostics."""
    for runs in (results["runs"], *longer_lists(results).values()):
        runs_with(("diagnostics",), "diagnostics")({"runs": runs})


EXPERIMENT = Experiment(
    name="noisy",
    doc=__doc__,
    settings=NoisySettings,
    run=run,
    needs=("ics",),  # the manipulation check: the ics experiment measures the noisy net's ICS
    figures=lambda results, shift: {"noisy.png": partial(plot_noisy, results)},
    tables=lambda results, shift: {"noisy-table": noisy_table(results)},
    check=check_runs,
    verdicts=lambda results, shift: [noisy_verdict(results, shift)],
)
