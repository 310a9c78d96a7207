"""Check the verdicts on seeds of your own: rerun every experiment that decides a row of the README's
verdict table on the seeds you name, into a scratch folder, and print each row's verdict beside the
committed one.

    python verdicts.py --seeds 51 52 53 54 55              # trains into runs/verdicts/ (a few minutes)
    python verdicts.py --seeds 51 52 53 54 55 --no-train   # the comparison again, from what is there

Each experiment keeps its own preset but for the seeds. A verdict may move to or from "not decided" on
other seeds; one that moves between "holds" and "does not hold" is a finding, and this script says so.
The committed results, figures and README are not touched (the results go to runs/, which git ignores).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import compare
import numerics
import stats
import train
from config import COMMITTED, TRIALS, build_parser, flag, seed_int
from experiments import EXPERIMENTS
from explanations import Verdict
from results import staged


@dataclass
class VerdictsConfig:
    """What verdicts.py reruns, and where."""

    seeds: list[int] = flag([51, 52, 53, 54, 55], "the seeds to rerun the verdicts' experiments on", type=seed_int,
                            metavar="SEED")  # fmt: skip
    out: str = flag(f"{TRIALS}/verdicts", "the scratch folder their results (and verdicts.md) go to")
    train: bool = flag(True, "train first (--no-train: compare what --out already holds)",
                       action=argparse.BooleanOptionalAction)


def deciding() -> list[str]:
    """The experiments whose records declare rows of the verdict table, in the registry's order."""
    return [name for name, e in EXPERIMENTS.items() if e.verdicts is not None]


def rows(folder: Path) -> list[Verdict]:
    """The verdict rows the results in ``folder`` give."""
    experiments = compare.load_experiments(folder, need_main=False, notes=False)
    missing = [name for name in deciding() if name not in experiments]
    if missing:
        raise ValueError(f"no {missing[0]} results in {folder}/: run verdicts.py without --no-train")
    return compare.verdict_rows(experiments)


def answers(text: str) -> list[str]:
    """The answers a verdict's text gives, in order (one per part: a range, a reading, a momentum, ...)."""
    return re.findall(rf"{stats.FAILS}|{stats.HOLDS}|{stats.UNDECIDED}|\*\*yes\*\*|\*\*no\*\*", text)


def flipped(committed: str, rerun: str) -> bool:
    """Whether some part of a verdict moved between "holds" and "does not hold", rather than to or from
    "not decided" (parts are compared in order)."""
    decided = {stats.HOLDS, stats.FAILS, "**yes**", "**no**"}
    a, b = answers(committed), answers(rerun)
    return len(a) != len(b) or any(x != y and {x, y} <= decided for x, y in zip(a, b, strict=True))


def comparison(committed: list[Verdict], rerun: list[Verdict], seeds: list[int]) -> str:
    lines = [f"Verdicts on the committed seeds and on seeds {' '.join(map(str, seeds))} (verdicts.py).", "",
             "| explanation | committed | these seeds | flipped |", "|---|---|---|---|"]  # fmt: skip
    for a, b in zip(committed, rerun, strict=True):
        moved = "**yes**" if flipped(a.verdict, b.verdict) else "no"
        lines.append(f"| {a.explanation} | {a.verdict} | {b.verdict} | {moved} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(VerdictsConfig, __doc__)
    config = VerdictsConfig(**vars(parser.parse_args(argv)))
    numerics.apply()
    out = Path(config.out)
    if config.train:
        for name in deciding():
            code = train.main([name, "--seeds", *map(str, config.seeds), "--out", str(out), "--quiet"])
            if code:
                return code
    try:
        table = comparison(rows(Path(COMMITTED)), rows(out), config.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    with staged(out / "verdicts.md", lambda tmp: tmp.write_text(table + "\n", encoding="utf-8")):
        pass
    print(table)
    print(f"wrote {out / 'verdicts.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
