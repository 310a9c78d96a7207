"""MyBN's two switches, read at every call (so that they can be changed at any time). ``my_bn.REFERENCE_ONLY``
and ``my_bn.BACKEND`` read and write these.

- ``REFERENCE_ONLY``: run every training call of a single process through the reference functions
  alone (``my_bn/reference.py``), whatever the input's size and the layer's backend, to step through
  them in a debugger. ``MYBN_REFERENCE_ONLY=1`` in the environment sets it.
- ``BACKEND``: what ``MyBN(backend=None)`` runs, one of ``BACKENDS``; ``MYBN_BACKEND`` sets it.
"""

import os

REFERENCE_ONLY = os.environ.get("MYBN_REFERENCE_ONLY", "0") not in ("", "0")
BACKENDS = ("python", "cpp")
BACKEND = os.environ.get("MYBN_BACKEND", "python")
