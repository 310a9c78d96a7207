"""The lab: what the experiments (``experiments/``) share, one concern a module, in floors that import
only downwards.

- ``settings``: a settings dataclass as a command line (``flag``, ``build_parser``), and ``Settings``,
  what every experiment takes; ``results``: the results format, written atomically, read back checked.
- ``data``, ``norms``, ``nets``: the data sets, the one registry of norm layers, and the nets that
  build theirs from it (the layer itself is the package ``my_bn``).
- ``loop``, ``workers``, ``probe``, ``diagnostics``, ``ensemble``: the training loop, the processes it
  runs in, and the one way to measure while a net trains.
- ``regression``: the original write-up's task, which ten of the experiments train.
- ``stats``, ``verdicts``, ``forest``: the verdicts' arithmetic, the verdict table and its forest plot;
  ``plotting``, ``pages``: the figures and the generated Markdown; ``numerics``: the CPU numerics policy;
  ``progress``; ``benchmarks``.

Importing any of it computes nothing: the entry points apply the numerics policy first.
"""
