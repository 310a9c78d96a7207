"""conv: where batch norm lives: on a conv net of real digits, does it need the batch, and what do the
layers that replace it buy?

``lab.nets.ConvNet`` (three 3×3 convolutions of 16 channels, each followed by the norm under test
and ReLU; global average pooling; a linear classifier; He-initialised, the same weights for every norm
at a seed) on scikit-learn's 8×8 digits (``data.digits_split``: 1,297 to train on, 50 of each digit
to test on; pixels standardised by the training set's mean and std), with each norm of ``ConvSettings.norms``:
none, ``MyBN2d`` (in float64 lock-step with ``nn.BatchNorm2d``, a test: its results are PyTorch's
layer's too), GroupNorm (4 groups), LayerNorm over (C, H, W) (GroupNorm with one group) and Batch
Renormalization (``MyBatchRenorm2d``: r_max = 3, d_max = 5, the paper's warm-up in proportion).

After Wu & He 2018 ("Group Normalization", Figure 1): every norm at each of ``batch_sizes`` for 4 epochs
(the cells that decide a verdict row for 12 too: ``long_epochs``), SGD with momentum 0.9 at lr · B / 32
(lr = 0.1) on a cosine schedule, 5 seeds (the rate sweep 10: ``sweep_more``), each seed's batches the
same permutations of the digits at every size and for every norm; ghost batch norm (``MyGhostBN2d``,
ghost batches of ``ghost_batch``) at ``ghost_at``; at batch 32, plain and MyBN2d at the rates of
``lr_factors`` too (Bjorck et al. 2018), and at ``held_factors`` MyBN2d with each filter scaled
back to its initial norm after every step (``training.HeldNorms``: does the effective rate's
self-tuning, Arora, Li & Lyu 2019, let it take those rates?); and at batch 32 MyBN2d and Batch Renorm
on non-i.i.d. batches, each drawn from ``noniid_classes`` classes (``lab.loop.ClassBatchOrder``;
Ioffe 2017's second experiment). Measured per seed: the test accuracy in eval mode and in
training mode (the test set in batches of the run's size, each normalised by its own
statistics), and the training digits' accuracy. A cell's seeds train as one five-member ``ConvNet``.

The package: ``training`` (the settings, the grid, a cell's training, what a run records), ``reading``
(the results read back: runs, each test digit's score, intervals, budgets), ``pages`` (the figure and
tables at the preset's budget), ``budgets`` (the figure and table across budgets) and ``verdicts`` (its
rows of the verdict table, each part at each budget); below, the record that declares the experiment, and the
names the rest of the project and the tests read.
"""

from __future__ import annotations

import functools

from experiments.conv.budgets import budget_table, plot_budgets
from experiments.conv.pages import batch_table, gap_table, lr_table, noniid_table, plot_conv, precise_table
from experiments.conv.reading import (
    difference,
    fall,
    interval,
    largest_rate,
    mode_gap,
    models,
    per_seed,
    sizes,
    sweep_rates,
    wider_rates,
)
from experiments.conv.training import (
    HELD,
    ITEMS,
    SWEEP,
    ConvSettings,
    cells,
    check_format,
    part_of,
    renorm_warmup,
    run,
    scaled_lr,
    settings_of,
    steps_per_epoch,
    sweep_seeds,
)
from experiments.conv.verdicts import (
    HIGHER,
    LESS_OVERFITTING,
    RULES,
    WIDER,
    ghost_regularises,
    larger_rates,
    needs_the_batch,
    renorm_fixes,
    renorm_noniid,
    self_tuning,
    verdicts,
)
from experiments.record import Experiment
from lab.results import at_budget, budgets

__all__ = ["ConvSettings", "EXPERIMENT", "HELD", "HIGHER", "ITEMS", "LESS_OVERFITTING", "RULES", "SWEEP", "WIDER",
           "at_budget", "batch_table", "budgets", "cells", "check_format", "difference", "fall", "gap_table",
           "ghost_regularises", "interval", "larger_rates", "largest_rate", "lr_table", "mode_gap", "models",
           "needs_the_batch", "noniid_table", "part_of", "per_seed", "plot_conv", "precise_table", "renorm_fixes",
           "renorm_noniid", "renorm_warmup", "run", "scaled_lr", "self_tuning", "settings_of", "sizes",
           "steps_per_epoch", "sweep_rates", "sweep_seeds", "verdicts", "wider_rates"]

EXPERIMENT = Experiment(
    name="conv",
    doc=__doc__,
    settings=ConvSettings,
    run=run,
    figures=lambda results: {"conv.png": functools.partial(plot_conv, results),
                             "conv_budgets.png": functools.partial(plot_budgets, results)},
    tables=lambda results: {"conv-batch-table": batch_table(results), "conv-precise-table": precise_table(results),
                            "conv-budget-table": budget_table(results), "conv-gap-table": gap_table(results),
                            "conv-lr-table": lr_table(results), "conv-noniid-table": noniid_table(results)},
    results_format=check_format,
    summary=batch_table,
    verdicts=verdicts,
    part=part_of,
)
