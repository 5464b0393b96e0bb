"""Imported first by the training scripts: pin native thread pools before numpy, torch and
tokenizers start them (the machine's other core is not ours). ``REPO`` is the checkout's root
(default paths of data and outputs); citeqa itself is imported as the installed package, and
the shared training code as ``training`` (this folder is sys.path[0] when a script runs)."""

from __future__ import annotations

import os
from pathlib import Path

for _var, _value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("RAYON_NUM_THREADS", "1")):
    os.environ.setdefault(_var, _value)

REPO = Path(__file__).resolve().parents[1]
