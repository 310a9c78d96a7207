"""The experiments, registered by name. Each module of this folder holds one experiment whole (its
training or measurement, its figures, its tables, its verdicts) and ends by declaring it: one
``record.Experiment``, named ``EXPERIMENT``. train.py, compare.py and the verdict table read the
records below and nothing else of the modules.

Adding an experiment means adding its module, and two lines here: its import and its entry in
``EXPERIMENTS`` (whose order is that of ``train.py all``, of its list in ``train.py --help``, and of the
verdict table's rows).

Only a run of an experiment's preset is part of the committed record (``results/``, ``picture/``,
``docs/`` and the README's tables); ``Experiment.off_preset`` says how another run differs from it.
"""

from __future__ import annotations

from experiments import (
    controls,
    conv,
    ddp,
    depth,
    float64,
    ics,
    landscape,
    lr,
    main,
    mnist,
    noisy,
    only_bn,
    running_stats,
    scale,
    sweep,
)
from experiments.record import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        main.EXPERIMENT,
        float64.EXPERIMENT,
        controls.EXPERIMENT,
        sweep.EXPERIMENT,
        ddp.EXPERIMENT,
        ics.EXPERIMENT,
        noisy.EXPERIMENT,
        landscape.EXPERIMENT,
        lr.EXPERIMENT,
        running_stats.EXPERIMENT,
        mnist.EXPERIMENT,
        conv.EXPERIMENT,
        depth.EXPERIMENT,
        scale.EXPERIMENT,
        only_bn.EXPERIMENT,
    )
}

