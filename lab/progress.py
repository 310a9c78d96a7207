"""How far a long run is: runs done out of runs, per experiment, with an estimate of the time left.

Where the output is a terminal, a tqdm bar; anywhere else (a CI log, a file), one plain line at most
every ``LINE_EVERY_S`` seconds and one when the last run is done, so that a log stays readable.
``train.py --quiet`` silences it. It goes to stderr, beside the results' own lines on stdout.

``train.py`` makes one ``Progress`` per experiment (``tracking``); the training code counts the runs it
is about to start (``expect``, or ``plan`` for an experiment that starts them in several rounds) and
each one that ends (``advance``), on whatever ``current()`` is: a silent one when nothing tracks.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 10.0  # the plain lines' spacing, at most one per this many seconds
ESTIMATE_AFTER = 0.25  # the fraction of an experiment's runs that must have ended before it estimates the rest


class Progress:
    """Runs done out of runs for one experiment, ``label``, on ``stream`` (stderr by default)."""

    def __init__(self, label: str, stream: TextIO | None = None, quiet: bool = False,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.quiet, self.clock = label, quiet, clock
        self.stream = sys.stderr if stream is None else stream
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.total = self.done = self.planned = 0
        self.started = self.clock()
        self.last_line = -math.inf
        self.bar: tqdm | None = None

    def plan(self, runs: int) -> None:
        """The whole experiment has ``runs`` runs, started in several rounds (each ``expect``-ed)."""
        self.planned = runs
        self._show(force=False)

    def expect(self, runs: int) -> None:
        """``runs`` more runs are about to start."""
        self.total += runs
        self._show(force=False)

    def advance(self, runs: int = 1) -> None:
        """``runs`` runs have ended."""
        self.done += runs
        self._show(force=self.done >= self.runs)

    @property
    def runs(self) -> int:
        return max(self.total, self.planned)

    def left_s(self) -> float | None:
        """The time left, from the mean time per run so far; None before ``ESTIMATE_AFTER`` of the runs have
        ended (an experiment's runs differ in cost, the slowest often first: the first run's time, scaled to
        all, once said 06:21 for a run that took 00:32)."""
        if not self.done or self.done < ESTIMATE_AFTER * self.runs:
            return None
        return (self.clock() - self.started) / self.done * max(self.runs - self.done, 0)

    def line(self) -> str:
        """``main: 12/30 runs, 00:45 so far, about 01:07 left``; ``main: 30/30 runs, done in 01:52``."""
        elapsed = tqdm.format_interval(self.clock() - self.started)
        if self.done >= self.runs:
            return f"{self.label}: {self.done}/{self.runs} runs, done in {elapsed}"
        left = self.left_s()
        eta = "" if left is None else f", about {tqdm.format_interval(left)} left"
        return f"{self.label}: {self.done}/{self.runs} runs, {elapsed} so far{eta}"

    def write(self, message: str) -> None:
        """Print ``message`` on stdout, above the bar where there is one."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _show(self, force: bool) -> None:
        if self.quiet or not self.runs:
            return
        if self.terminal:
            if self.bar is None:
                self.bar = tqdm(total=self.runs, desc=self.label, unit="run", file=self.stream, dynamic_ncols=True)
            self.bar.total = self.runs
            self.bar.n = self.done
            self.bar.refresh()
            return
        now = self.clock()
        if (force or now - self.last_line >= LINE_EVERY_S) and self.done:
            print(self.line(), file=self.stream, flush=True)
            self.last_line = now


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without a file behind it, or a closed one
        return False


_SILENT = Progress("", quiet=True)
_current = _SILENT


def current() -> Progress:
    """The progress of the experiment that is running: a silent one when nothing tracks it."""
    return _current


@contextlib.contextmanager
def tracking(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the ``current()`` one for the block."""
    global _current
    before, _current = _current, progress
    try:
        yield progress
    finally:
        progress.close()
        _current = before


def silence() -> None:
    """From now on in this process, nothing tracks (a process of a group other than the first)."""
    global _current
    _current = _SILENT


def counted(pool_map: Callable) -> Callable:
    """``pool_map`` (``map``, or a process pool's) that counts each result it yields as a run ended."""

    def mapped(fn, *iterables):
        for item in pool_map(fn, *iterables):
            current().advance()
            yield item

    return mapped
