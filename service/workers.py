"""Sharing one question's model runs over concurrent one-thread workers.

onnxruntime releases the GIL during ``session.run``, so several Python threads can run the
same session at once, each on one intra-op thread. On our 2 cores this beats intra-op
threading (which spins, and doubled the cross-encoder's time when the other core was busy:
scripts/bench_parts.py) and keeps each run's result independent of how runs are shared out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def make_pool(workers: int, name: str) -> ThreadPoolExecutor | None:
    """A pool for ``workers`` > 1; None means: run in the calling thread."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name) if workers > 1 else None


def close_pool(pool: ThreadPoolExecutor | None) -> None:
    """Wait for the pool's runs and end its threads (a closed model then runs in the caller)."""
    if pool is not None:
        pool.shutdown(wait=True)


def share_out(jobs: Sequence[T], cost: Callable[[T], int], workers: int) -> list[list[T]]:
    """Jobs dealt to ``workers`` shares of nearly equal total cost: longest first, each to the
    share with the least so far. Empty shares are dropped."""
    shares: list[list[T]] = [[] for _ in range(workers)]
    load = [0] * workers
    for job in sorted(jobs, key=cost, reverse=True):
        w = load.index(min(load))
        shares[w].append(job)
        load[w] += cost(job)
    return [s for s in shares if s]


def run_shared(pool: ThreadPoolExecutor | None, workers: int, jobs: Sequence[T],
               cost: Callable[[T], int], run: Callable[[list[T]], None]) -> None:
    """``run`` over ``jobs``: in the calling thread without a pool (or with one job), else the
    ``workers`` shares concurrently. ``run`` writes its results itself (disjoint rows)."""
    if pool is None or len(jobs) < 2:
        run(list(jobs))
        return
    for future in [pool.submit(run, share) for share in share_out(jobs, cost, workers)]:
        future.result()
