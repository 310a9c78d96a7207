"""Check the verdicts yourself: rerun every experiment that decides a row of the README's verdict table,
on seeds of your own or under other rounding, into a scratch folder, and print each row's verdict beside
the committed one.

    python verdicts.py --start 51                # other seeds, each preset's count: into runs/verdicts/ (minutes)
    python verdicts.py --seeds 51 52 53 54 55    # these seeds for every experiment
    python verdicts.py --rounding                # committed seeds, other numerics: into runs/rounding/
    python verdicts.py --start 51 --no-train     # the comparison again, from what is there

Other seeds: each experiment keeps its own preset but for the seeds (``--start``: as many as its preset
has, 10 for the regression task and depth, 5 on digits, from START on; ``--seeds``: the same for all).
Other rounding (``--rounding``): each experiment's own preset, committed seeds included, under the other
CPU numerics than the committed record's (lab/numerics.py: ``BN_NUMERICS=native``, the machine's fastest
kernels, against the portable policy the record is made under), a fair sample of what another machine's
rounding does to the same runs. A part of a verdict may move to or from "not decided"; one that moves
between "holds" and "does not hold" is a finding, and this script says so. The committed results,
figures and README are not touched (the results go to runs/, which git ignores, and an --out inside
results/ is refused).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import EXPERIMENTS, VERDICTS_FILE, load_experiments, read_verdicts, verdict_data, verdict_rows
from lab import numerics, stats
from lab.pages import table
from lab.results import inside, load_results, staged
from lab.settings import COMMITTED, TRIALS, build_parser, flag, seed_int
from lab.verdicts import Verdict

ROOT = Path(__file__).resolve().parent
START = 51  # other seeds, where none are named: each experiment's preset count from here
MIN_SEEDS = 3  # fewer is refused


@dataclass
class VerdictsConfig:
    """What verdicts.py reruns, and where."""

    seeds: list[int] | None = flag(None, "the seeds to rerun every deciding experiment on", type=seed_int, nargs="+",
                                   metavar="SEED")
    start: int | None = flag(None, "rerun each deciding experiment on as many seeds as its preset has (10 or 5), "
                             "these from START on", type=seed_int)
    rounding: bool = flag(False, "rerun under the other CPU numerics than the committed record's (lab/numerics.py)",
                          action=argparse.BooleanOptionalAction)
    out: str | None = flag(None, "the scratch folder their results (and verdicts.md) go to")
    train: bool = flag(True, "train first (--no-train: compare what --out already holds)",
                       action=argparse.BooleanOptionalAction)


def deciding() -> list[str]:
    """The experiments whose records declare rows of the verdict table, in the registry's order."""
    return [name for name, e in EXPERIMENTS.items() if e.verdicts is not None]


def rows(folder: Path) -> list[Verdict]:
    """The verdict rows the results in ``folder`` give."""
    found = load_experiments(folder, need_main=False, notes=False)
    missing = [name for name in deciding() if name not in found]
    if missing:
        raise ValueError(f"no {missing[0]} results in {folder}/: run verdicts.py without --no-train")
    return verdict_rows(found)


DECIDED = {stats.HOLDS, stats.FAILS, "yes", "no"}


def key(part: dict) -> tuple[str, str, str, str]:
    """What names a part across runs: its row, label, budget and evaluation."""
    return part["row"], part["part"], part["budget"], part["evaluation"]


def flipped(committed: str, rerun: str) -> bool:
    """Whether a part moved between "holds" and "does not hold" (or "yes" and "no"), rather than to or from
    "not decided"."""
    return committed != rerun and {committed, rerun} <= DECIDED


def what_ran(folder: Path) -> tuple[str, str]:
    """The numerics policy (portable, native, mixed; results from before lab/numerics.py: native) and the seeds of
    the deciding experiments' results in ``folder``, as those results record them."""
    records = [load_results(p, check=lambda _: None) for name in deciding()
               if (p := EXPERIMENTS[name].results_path(folder)).exists()]
    policies = {r["environment"].get("numerics", {}).get("policy", "native") for r in records}
    seeds = sorted({tuple(r["config"]["seeds"]) for r in records})
    policy = policies.pop() if len(policies) == 1 else "mixed" if policies else "no"
    return policy, f"seeds {'; '.join(' '.join(map(str, s)) for s in seeds)}, {policy} numerics"


def comparison(committed: list[dict], rerun: list[dict], heading: str) -> str:
    """Part by part (the data files' records): the committed answer, the rerun's, and whether it flipped; a
    part that only one of them has is shown with "—" on the other side."""
    theirs = {key(p): p["answer"] for p in rerun}
    rows = []
    for part in committed:
        answer = theirs.get(key(part), "—")
        moved = "**yes**" if flipped(part["answer"], answer) else "no"
        extra = [x for x in (part["budget"], part["evaluation"]) if x not in part["part"]]  # what its label omits
        label = ", ".join(x for x in (part["part"], *extra) if x) or "—"
        rows.append([part["row"], label, part["answer"], answer, moved])
    return "\n".join([heading, "", table(("explanation", "part", "committed", "rerun", "flipped"), rows)])


def retrain(config: VerdictsConfig, out: Path, policy: str) -> int:
    """Each deciding experiment's preset, with the seeds asked for, into ``out``: train.py in a process of its own
    under ``policy``'s numerics (a process's numerics are fixed once it computes). Returns train.py's exit code."""
    env = numerics.environment_for(policy)
    for name in deciding():
        count = len(EXPERIMENTS[name].settings().seeds)
        chosen = config.seeds or (list(range(config.start, config.start + count)) if config.start is not None else [])
        seeds = ["--seeds", *map(str, chosen)] if chosen else []
        cmd = [sys.executable, str(ROOT / "train.py"), name, *seeds, "--out", str(out), "--quiet"]
        code = subprocess.run(cmd, env=env).returncode
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    shown = {"start": f"default: {START}; with --rounding the committed seeds",
             "out": f"default: {TRIALS}/verdicts; with --rounding {TRIALS}/rounding"}
    parser = build_parser(VerdictsConfig, __doc__, shown=shown)
    config = VerdictsConfig(**vars(parser.parse_args(argv)))
    if config.seeds is not None and config.start is not None:
        parser.error("argument --start: not with --seeds (one or the other)")
    if config.seeds is None and config.start is None and not config.rounding:
        config.start = START
    if config.seeds is not None and len(set(config.seeds)) < MIN_SEEDS:
        parser.error(f"argument --seeds: at least {MIN_SEEDS} different seeds (one seed has no interval, and two "
                     f"give one too wide to decide much); got {' '.join(map(str, config.seeds))}")
    out = Path(config.out or f"{TRIALS}/{'rounding' if config.rounding else 'verdicts'}")
    if inside(out, COMMITTED) or inside(COMMITTED, out):
        parser.error(f"--out {out}: the scratch folder must lie outside the committed {COMMITTED}/")
    mine = numerics.apply()
    committed, described = what_ran(Path(COMMITTED))
    policy = {"portable": "native"}.get(committed, "portable") if config.rounding else mine
    if config.train:
        try:
            code = retrain(config, out, policy)
        except KeyboardInterrupt:
            sys.exit("interrupted: the scratch folder holds what finished before that")
        if code:
            return code
    try:
        heading = f"Verdicts committed ({described}) and rerun ({what_ran(out)[1]}) (verdicts.py)."
        data = verdict_data(rows(out))
        table = comparison(read_verdicts(Path(COMMITTED)), json.loads(data)["parts"], heading)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"cannot read {exc.filename}: {exc.strerror or exc}: run compare.py first")
    with (staged(out / VERDICTS_FILE, lambda tmp: tmp.write_text(data, encoding="utf-8")),
          staged(out / "verdicts.md", lambda tmp: tmp.write_text(table + "\n", encoding="utf-8"))):
        pass
    print(table)
    print(f"wrote {out / 'verdicts.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
