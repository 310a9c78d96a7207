"""The experiments, registered by name. Each module holds one experiment whole:

- ``PRESET``: the ``config.Config`` values it changes (train.py runs it with them);
- ``figures(experiments)``: file name -> function drawing it into a path, from the loaded results;
- ``tables(experiments)``: README marker name -> generated table;
- optionally ``run(config, log)``: its own training or measurement, returning the results dict
  (by default ``training.run_experiment``);
- optionally ``check(experiments)``: a ValueError naming what its figures and tables need of the
  results beyond their format (compare.py calls it on loading);
- optionally ``FIXED``: ``{setting: (value, why)}``, the ``config.Config`` settings it does not read,
  with the value that describes what runs instead (a flag with another value is refused);
- optionally ``UNUSED``: ``{setting: why}``, the settings that mean nothing to it (a flag for one is
  refused, and its results do not record it);
- optionally ``config_problem(config)``: why train.py cannot run that config, or None.

``experiments`` maps each registered name whose results exist to those results; ``main`` is always
there. Results go to OUT/results.json for ``main`` and to OUT/NAME/results.json for the others.
Adding an experiment means adding a module here and one entry below.

Only a run of an experiment's preset is part of the committed record (``results/``, ``picture/`` and
the README's tables); ``off_preset`` says how another run differs from it.
"""

from __future__ import annotations

import dataclasses

from config import Config, as_flag, resolve_device
from experiments import controls, ddp, float64, ics, landscape, lr, main, mnist, noisy, running_stats, sweep

EXPERIMENTS = {
    "main": main,
    "float64": float64,
    "controls": controls,
    "sweep": sweep,
    "ddp": ddp,
    "ics": ics,
    "noisy": noisy,
    "running_stats": running_stats,
    "lr": lr,
    "landscape": landscape,
    "mnist": mnist,
}

# Settings that change nothing in the results: where they are written, and how many processes share
# the runs (each run is deterministic on its own).
NOT_RESULTS = ("out", "workers")


def fixed_values(name: str) -> dict:
    """The settings experiment ``name`` runs with whatever the flags say (its ``FIXED``), by name."""
    return {setting: value for setting, (value, _why) in getattr(EXPERIMENTS[name], "FIXED", {}).items()}


def preset_config(name: str) -> Config:
    """The config of experiment ``name``'s own preset: what ``train.py NAME`` runs."""
    return Config(**{**EXPERIMENTS[name].PRESET, **fixed_values(name)})


def _same_device(a, b) -> bool:
    if a == b:
        return True
    try:
        return resolve_device(a) == resolve_device(b)
    except ValueError:  # a device this machine does not have: only the same name is the same
        return False


def off_preset(name: str, config: dict) -> list[str]:
    """The settings of ``config`` (a ``Config`` as a dict, or the config a results file records) where
    it differs from experiment ``name``'s preset, as flags with their values (``--epochs 2``): empty
    for a run of the preset itself. Where results are written and the worker count do not count."""
    preset = dataclasses.asdict(preset_config(name))
    unused = getattr(EXPERIMENTS[name], "UNUSED", {})
    differ = []
    for setting, value in config.items():
        if setting in NOT_RESULTS or setting in unused or setting not in preset:
            continue
        same = _same_device(value, preset[setting]) if setting == "device" else value == preset[setting]
        if not same:
            differ.append(as_flag(setting, value))
    return differ
