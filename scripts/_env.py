"""Imported first by the training scripts: pin native thread pools before numpy, torch and
tokenizers start them (the machine's other core is not ours), and put the repo on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var, _value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                     ("TOKENIZERS_PARALLELISM", "false"), ("RAYON_NUM_THREADS", "1")):
    os.environ.setdefault(_var, _value)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
