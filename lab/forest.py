"""The verdicts as a picture: every part of every row, its estimate and 95% interval against its margin,
marked by its answer (a forest plot), drawn by compare.py from the parts as data (``Verdict.records``, the
records of results/verdicts.json).

A panel per row (per row and scale where a row mixes log-ratios and differences), a line per part. A
log-ratio is drawn as its ratio on a log axis; a difference on a linear one. The interval is the one the
part is decided on (a t-interval, or for accuracies one that counts the test digits' sampling error too); a
grid-valued part (a sign test) has no interval, so its median is drawn alone and its count beside it. The
margin is the black tick on the part's line, with a triangle on the side the claim says; a "within" claim
shades its band. The colour is the answer, after Holm's correction over the row.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from lab import stats
from lab.plotting import DPI, pyplot
from lab.verdicts import claim_text, part_name

ANSWER_STYLE = {stats.HOLDS: ("#1A7F37", "o"), stats.FAILS: ("#CF222E", "X"), stats.UNDECIDED: ("0.55", "o")}
ROW_HEIGHT, PANEL_EXTRA = 0.24, 0.75  # inches: a part's line; a panel's title and axis
CLAIM_MARKER = {"above": ">", "below": "<"}


def panels(records: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(row, scale, its parts) in the order of the records: a row's parts on one scale share a panel."""
    out: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        if "claim" in record:  # a fact has no estimate to draw
            out.setdefault((record["row"], record["scale"]), []).append(record)
    return [(row, scale, parts) for (row, scale), parts in out.items()]


def columns(groups: list, k: int = 2) -> list[list]:
    """The panels cut into ``k`` columns of about equal height, in order."""
    heights = [len(parts) * ROW_HEIGHT + PANEL_EXTRA for _, _, parts in groups]
    total, cut, out, acc = sum(heights), 1, [[]], 0.0
    for group, h in zip(groups, heights, strict=True):
        if cut < k and acc + h / 2 > total * cut / k:
            out.append([])
            cut += 1
        out[-1].append(group)
        acc += h
    return out


def _x(record: dict, value: float) -> float:
    return math.exp(value) if record["scale"] == "log-ratio" else value


def draw_part(ax, y: float, record: dict) -> None:
    """One part's line: its interval (or a sign test's median and count), its margin and its answer."""
    colour, marker = ANSWER_STYLE[record["answer"]]
    margin, claim = record["margin"], record["claim"]
    if claim == "within":
        ax.fill_betweenx([y - 0.4, y + 0.4], _x(record, -margin), _x(record, margin), color="0.85", lw=0)
    else:
        ax.plot([_x(record, margin)] * 2, [y - 0.35, y + 0.35], color="black", lw=0.9)
        ax.plot(_x(record, margin), y + 0.35, CLAIM_MARKER[claim], color="black", ms=2.5)
    if record["test"] == "sign":
        ax.plot(_x(record, record["median"]), y, "D", color=colour, ms=5)
        ax.annotate(f"{record['above']} of {record['n']} above, {record['ties']} tied",
                    (_x(record, record["median"]), y), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize=6.5, color=colour)
        return
    if record.get("low") is not None and record.get("high") is not None:
        ax.plot([_x(record, record["low"]), _x(record, record["high"])], [y, y], color=colour, lw=2.2,
                solid_capstyle="butt")
    if record.get("mean") is not None:
        ax.plot(_x(record, record["mean"]), y, marker, color=colour, ms=5, mec="white", mew=0.6)


def draw_panel(ax, row: str, scale: str, parts: list[dict]) -> None:
    ys = list(range(len(parts)))[::-1]  # the first part at the top
    for y, record in zip(ys, parts, strict=True):
        draw_part(ax, y, record)
    ax.axvline(1.0 if scale == "log-ratio" else 0.0, color="0.75", lw=0.8, zorder=0)
    ax.set_yticks(ys, [f"{part_name(r)}  ({claim_text(r)})" for r in parts], fontsize=7)
    ax.set_ylim(-0.7, len(parts) - 0.3)
    if scale == "log-ratio":
        ax.set_xscale("log")
        ticker = pyplot().matplotlib.ticker
        low, high = ax.get_xlim()
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0,) if high / low > 30 else (1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"×{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("ratio (log scale)" if scale == "log-ratio" else "difference", fontsize=7)
    ax.set_title("\n".join(textwrap.wrap(row, 62)), fontsize=8.5, loc="left")


def plot_verdicts(records: list[dict], outfile: Path) -> None:
    """The forest plot of every part of the verdict table, ``records`` as ``Verdict.records`` gives them."""
    plt = pyplot()
    cols = columns(panels(records))
    height = max(sum(len(p) * ROW_HEIGHT + PANEL_EXTRA for _, _, p in col) for col in cols) + 0.6
    fig = plt.figure(figsize=(15, height), layout="constrained")
    for sub, col in zip(fig.subfigures(1, len(cols), squeeze=False).flat, cols, strict=True):
        ratios = [len(p) + 2.2 for _, _, p in col]  # a part's line, and room for the title and the axis
        axes = sub.subplots(len(col), 1, squeeze=False, gridspec_kw={"height_ratios": ratios})
        for ax, (row, scale, parts) in zip(axes.flat, col, strict=True):
            draw_panel(ax, row, scale, parts)
    fig.suptitle("Every part of every verdict: its estimate and 95% interval (a diamond: a grid-valued part's median, "
                 "beside its count of seeds), against its margin\n(the black tick, its triangle on the side the "
                 f"claim says; a grey band: \"within\"). Green: {stats.HOLDS}; red: {stats.FAILS}; grey: "
                 f"{stats.UNDECIDED} (after Holm's correction over the row)", fontsize=9)
    fig.savefig(outfile, format="png", dpi=DPI)
    plt.close(fig)
