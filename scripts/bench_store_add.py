#!/usr/bin/env python
"""Adding document by document to a FAISS store: citeqa's FaissStore against the old way
(one concatenation per add), measured in the same run.

    python scripts/bench_store_add.py --rows 200000 --adds 2000

``--rows`` vectors are already in the store (384 dimensions, as citeqa's embedders). Then
``--adds`` documents of ``--units`` units each are added one at a time, as ``citeqa index``
adds them. The baseline concatenates on every add, so each add copies all the vectors.
"""

from __future__ import annotations

import _env  # noqa: F401  (thread pools pinned before numpy starts them)

import argparse
import sys
import time

import numpy as np

from citeqa.index.store import FaissStore
from citeqa.index.units import Unit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--adds", type=int, default=2_000)
    p.add_argument("--units", type=int, default=5, help="units per document")
    p.add_argument("--dim", type=int, default=384)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    doc = rng.normal(size=(args.units, args.dim)).astype(np.float32)
    units = [Unit("d.txt", 1, i, i + 1, "t") for i in range(args.units)]

    store = FaissStore(args.dim)
    store.add([Unit("base.txt", 1, 0, 1, "t")] * args.rows, base)
    start = time.perf_counter()
    for _ in range(args.adds):
        store.add(units, doc)
    ours = time.perf_counter() - start

    vectors = base.copy()  # the old FaissStore.add: np.concatenate on every call
    start = time.perf_counter()
    for _ in range(args.adds):
        vectors = np.concatenate([vectors, doc])
    baseline = time.perf_counter() - start
    assert len(vectors) == len(store)

    n = f"{args.adds} adds of {args.units} units onto {args.rows:,} rows"
    print(f"{n}: FaissStore {ours:.2f} s, concatenate per add (baseline) {baseline:.2f} s, "
          f"ratio {ours / baseline:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
