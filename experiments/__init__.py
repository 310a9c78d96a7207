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
"""

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
