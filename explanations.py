"""Which explanation of batch norm holds here? The README's verdict table, generated from the results
of the experiments that test each explanation (experiments/ics, noisy, landscape, lr, running_stats).

Each row: the explanation, what it predicts on this task, what was measured, and a verdict decided
by a stated rule from those numbers. Nothing in the table is typed by hand.
"""

from __future__ import annotations

from experiments import ics, landscape, lr, running_stats
from plotting import range_text
from results import mean_std, summarize

NEEDED = ("ics", "noisy", "landscape", "lr", "running_stats")
HARD = 5.0  # the range where the plain net fails in the main experiment
EASY = 1.0


def tables(experiments: dict[str, dict]) -> dict[str, str]:
    if not all(name in experiments for name in NEEDED):
        return {}
    return {"verdict-table": verdict_table(experiments)}


def final(results: dict, r: float, model: str) -> float:
    return next(row["mean"] for row in summarize(results) if row["range"] == r and row["model"] == model)


def ics_row(results: dict) -> list[str]:
    cells = []
    for r in (HARD, EASY):
        rel = {m: ics.block_mean(results, r, m, "rel") for m in ("plain", "my_bn")}
        shift = {m: ics.block_mean(results, r, m, "dmean") for m in ("plain", "my_bn")}
        cells.append(f"{range_text(r)}: ‖G − G′‖/‖G‖ plain {rel['plain']:.2g}, MyBN {rel['my_bn']:.2g}; "
                     f"input-mean shift plain {shift['plain']:.2g}, MyBN {shift['my_bn']:.2g}")  # fmt: skip
    hard, easy = ics.verdict(results, HARD), ics.verdict(results, EASY)
    agree = all(v["santurkar"] == v["ioffe"] for v in (hard, easy))
    if all(hard.values()) and all(easy.values()):
        verdict = "holds: batch norm lowers ICS by both readings"
    elif not any(hard.values()):
        verdict = (f"**does not hold** where batch norm matters: on {range_text(HARD)} the failing plain net has "
                   f"*less* ICS than MyBN by both readings (its saturated units barely move)"
                   + (f"; on {range_text(EASY)} MyBN's is lower" if all(easy.values()) else ""))  # fmt: skip
    else:
        verdict = "mixed: the two readings or the two ranges disagree"
    verdict += ". The two readings agree" if agree else ". The two readings disagree"
    return ["Internal covariate shift (Ioffe & Szegedy 2015)",
            "BN nets have less ICS (Santurkar's Def. 2.1, and the shift of each block's input), most where BN "
            "helps most", "; ".join(cells), verdict, "[ics](picture/ics.png)"]  # fmt: skip


def noisy_row(results: dict) -> list[str]:
    bn, noisy, plain = (final(results, HARD, m) for m in ("my_bn", "my_bn_noisy", "plain"))
    kept = (plain - noisy) / (plain - bn)  # share of BN's improvement over plain that survives the noise
    measured = (f"final test MSE on {range_text(HARD)}: MyBN {bn:.3g}, MyBN + noise {noisy:.3g}, plain "
                f"{plain:.3g}, plain + noise {final(results, HARD, 'plain_noisy'):.3g}")  # fmt: skip
    if kept > 0.8:
        verdict = (f"**refutes the ICS explanation**: with its distributions shifted every step, MyBN keeps "
                   f"{kept:.0%} of its gain over the plain net")  # fmt: skip
    else:
        verdict = f"supports the ICS explanation: the noise takes away {1 - kept:.0%} of MyBN's gain"
    return ["ICS, tested by injecting it (Santurkar et al. 2018, Alg. 1)",
            "if steady distributions are what helps, BN with non-stationary noise should train like the plain net",
            measured, verdict, "[noisy](picture/noisy.png)"]  # fmt: skip


def landscape_row(results: dict) -> list[str]:
    cells = []
    for r in (HARD, EASY):
        values = {m: (landscape.summary(results, r, m, "gdiff_max"), landscape.summary(results, r, m, "beta"))
                  for m in ("plain", "my_bn")}  # fmt: skip
        (plain_g, plain_b), (bn_g, bn_b) = values["plain"], values["my_bn"]
        cells.append(f"{range_text(r)}: gradient change plain {plain_g:.3g}, MyBN {bn_g:.3g}; "
                     f"β plain {plain_b:.3g}, MyBN {bn_b:.3g}")  # fmt: skip
    smoother = [landscape.smoother_with_bn(results, r) for r in (HARD, EASY)]
    where = [range_text(r) for r, s in zip((HARD, EASY), smoother, strict=True) if s]
    rule = "gradient change and β-smoothness both at least 10% lower with MyBN"
    verdict = (f"holds on both ranges: {rule}" if all(smoother) else
               f"holds only on {where[0]}: {rule} there, not on the other range" if where else
               f"does not hold: no range has {rule}")  # fmt: skip
    return ["A smoother landscape (Santurkar et al. 2018, §3.2)",
            "along the gradient, the loss and its gradient change less with BN (plain SGD, same learning rate)",
            "; ".join(cells) + " (medians over training)", verdict, "[landscape](picture/landscape.png)"]  # fmt: skip


def lr_row(results: dict) -> list[str]:
    epochs = lr.budgets(results)
    cells, wider = [], []
    for r in (HARD, EASY):
        for opt in lr.GRIDS:
            plain, bn = (lr.largest_training_lr(results, r, m, opt, epochs[-1]) for m in ("plain", "my_bn"))
            cells.append(f"{range_text(r)} {opt}: plain {plain or 'none'}, MyBN {bn or 'none'}")
            wider.append((bn or 0) >= (plain or 0))
    verdict = ("holds: MyBN trains at learning rates at least as large as the plain net's everywhere"
               if all(wider) else "holds only in part: the plain net trains at larger rates in some cells")  # fmt: skip
    return ["Larger learning rates (Bjorck et al. 2018)",
            "BN nets still train at larger learning rates", f"largest lr that trains in {epochs[-1]} epochs: "
            + "; ".join(cells), verdict, "[lr](picture/lr.png)"]  # fmt: skip


def running_stats_row(results: dict) -> list[str]:
    cells, gains, precise_values = [], [], []
    for model in ("my_bn", "my_bn_m01"):
        run_, precise = (mean_std(running_stats.curves(results, HARD, model, m)[:, -1].tolist())[0]
                         for m in ("running", "precise"))  # fmt: skip
        gains.append(1 - precise / run_)
        precise_values.append(precise)
        momentum = "0.5" if model == "my_bn" else "0.1"
        cells.append(f"momentum {momentum}: moving averages {run_:.3g}, precise {precise:.3g}")
    verdict = (f"holds in part: precise statistics lower the final test MSE on {range_text(HARD)} by {gains[0]:.0%} "
               f"at momentum 0.5 and {gains[1]:.0%} at 0.1")  # fmt: skip
    if precise_values[0] == precise_values[1]:
        verdict += " (the weights are the same at both momenta: the running statistics never enter training)"
    return ["Running statistics that lag (Wu & Johnson 2021)",
            "eval with statistics precise for the final weights beats the moving averages",
            f"final test MSE on {range_text(HARD)}, " + "; ".join(cells), verdict,
            "[running_stats](picture/running_stats.png)"]  # fmt: skip


def objection_row(results: dict) -> list[str]:
    epochs = lr.budgets(results)
    cells = []
    for e in epochs:
        for m in ("plain", "my_bn"):
            rate, mse = lr.best(results, HARD, m, "adam", e)
            cells.append(f"{e} epochs, {'plain' if m == 'plain' else 'MyBN'}: {mse:.3g} (lr {rate:g})")
    plain_long, bn_long = (lr.best(results, HARD, m, "adam", epochs[-1])[1] for m in ("plain", "my_bn"))
    plain_short = lr.largest_training_lr(results, HARD, "plain", "adam", epochs[0])
    if plain_long <= 1.5 * bn_long and plain_short is None:
        verdict = (f"**yes, in part**: with {epochs[-1]} epochs and the right learning rate the plain net fits "
                   f"{range_text(HARD)} as well as MyBN; within {epochs[0]} epochs no rate of the grid trains it. "
                   "Batch norm widens and speeds up the range of settings that train; it does not rescue an "
                   "otherwise untrainable net")  # fmt: skip
    elif plain_short is None:
        verdict = f"no: the plain net does not reach MyBN's fit on {range_text(HARD)} at any rate or budget"
    else:
        verdict = "yes: the plain net trains at another learning rate within the same budget"
    return [
        "Objection: the plain net just needs another learning rate or more epochs",
        "if so, some (lr, budget) of the grid trains the plain net as well as MyBN",
        "best Adam cell on " + range_text(HARD) + ": " + "; ".join(cells),
        verdict,
        "[lr](picture/lr.png)",
    ]


def verdict_table(experiments: dict[str, dict]) -> str:
    rows = [ics_row(experiments["ics"]), noisy_row(experiments["noisy"]), landscape_row(experiments["landscape"]),
            lr_row(experiments["lr"]), running_stats_row(experiments["running_stats"]),
            objection_row(experiments["lr"])]  # fmt: skip
    lines = ["| explanation | what it predicts here | what was measured | verdict | figure |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
