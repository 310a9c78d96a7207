"""residual: batch norm in residual nets: does it bias each block towards the identity at initialisation, what
replaces it, and how deep does each train?

The explanation the field now gives most often for why batch norm lets deep nets train is about residual
nets. De & Smith 2020 ("Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
Networks"): "at initialization, batch normalization downscales the residual branch relative to the skip
connection, by a normalizing factor on the order of the square root of the network depth. This ensures
that, early in training, the function computed by normalized residual blocks in deep networks is close to
the identity function (on average). We use this insight to develop a simple initialization scheme that can
train deep residual networks without normalization. [...] although batch normalized networks can be
trained with larger learning rates, this effect is only beneficial in specific compute regimes". Zhang,
Dauphin & Ma 2019 ("Fixup Initialization: Residual Learning Without Normalization") train deep residual
nets without it by rescaling their initialisation; Brock, De & Smith 2021 ("Characterizing signal
propagation to close the performance gap in unnormalized ResNets") by Scaled Weight Standardisation, which
"preserves the signal in networks with ReLU or Swish activation functions by ensuring that the per-channel
activation means do not grow with depth". And Yang et al. 2019 ("A Mean Field Theory of Batch
Normalization") find deep batch-normalised nets *without* skip connections hard to train, their gradients
exploding with depth (the depth experiment measures that explosion at initialisation).

``lab.resnets.ResNet``: a stride-2 3×3 stem (8×8 digits -> 4×4), ``depths`` pre-activation residual blocks of
two 3×3 convolutions of ``width`` channels, a ReLU, global average pooling and a linear classifier, in each
variant of ``lab.resnets.VARIANTS``: no norm (He), ``MyBN2d``, SkipInit (α = 0), Fixup, normaliser-free
with Scaled WS, and no norm and ``MyBN2d`` without the skips (each written from its paper, quoted in
lab/resnets.py, and tested on a case with a known answer); every variant from the same draws at a seed.

**At initialisation** (no training): at each of ``init_depths``, each variant's nets on ``init_batch``
training digits, in training mode, block by block: the stream's mean square E[x_l²] and its
average channel variance (Brock et al.'s signal-propagation plots), and the branch's variance over the
stream's, which De & Smith predict falls as 1/(l + 1) with batch norm.

**Under training**, on scikit-learn's 8×8 digits (1,297 to train on, 500 to test on, as the conv
experiment's): each variant with skips at each of ``depths`` and those without at the deepest, at each rate
of ``rates``, SGD with momentum 0.9 on a
cosine schedule, batch 32, ``epochs`` epochs; the seeds of a cell train as one grouped net, each seed's
batches the same for every variant. Measured per seed: the test accuracy in eval mode (on the running
averages, and for batch norm on precise statistics too), the largest rate at which a net trains (test
accuracy at least 0.5, as the conv experiment's), and the test accuracy at ``common_rate``. At the longer
budgets (``long_epochs``) the deepest nets the rows compare train again.

The package: ``training`` (the settings, the measurement at initialisation, the training), ``reading`` (the
results read back), ``pages`` (the figures and tables) and ``verdicts`` (its rows of the verdict table).
"""

from __future__ import annotations

import functools

from experiments.record import Experiment
from experiments.residual.pages import init_table, plot_init, plot_training, training_table
from experiments.residual.reading import falls_as, interval, largest_rate, slope
from experiments.residual.training import (
    LONG,
    TRAINS,
    ResidualSettings,
    cells,
    check_format,
    part_of,
    propagation,
    run,
    settings_of,
)
from experiments.residual.verdicts import RULES, verdicts

__all__ = ["EXPERIMENT", "LONG", "RULES", "TRAINS", "ResidualSettings", "cells", "check_format", "falls_as",
           "interval", "largest_rate", "propagation", "run", "settings_of", "slope", "verdicts"]

EXPERIMENT = Experiment(
    name="residual",
    doc=__doc__,
    settings=ResidualSettings,
    run=run,
    figures=lambda results: {"residual_init.png": functools.partial(plot_init, results),
                             "residual.png": functools.partial(plot_training, results)},
    tables=lambda results: {"residual-init-table": init_table(results), "residual-table": training_table(results)},
    results_format=check_format,
    summary=training_table,
    verdicts=verdicts,
    part=part_of,
)
