"""Backend-independent reading: window all contexts, run the model in few batched calls, decode.

``OnnxReader`` (serving) and the torch reader used while training subclass :class:`SpanReader`
and only provide ``_logits``; windowing and decoding stay identical across both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from citeqa.service.reader.decode import ReaderResult, decode_windows
from citeqa.service.reader.windows import Window, Windower, pad_batch
from citeqa.service.workers import close_pool, run_shared


class SpanReader(ABC):
    """Extractive reader over a list of contexts for one question."""

    windower: Windower
    max_answer_tokens: int = 30
    max_batch_windows: int = 32  # windows per model call; bounds memory for many long contexts
    # Batches are shared over `workers` concurrent runs of `_pool` (service.workers); without
    # a pool they run in the calling thread.
    workers: int = 1
    _pool = None

    @abstractmethod
    def _logits(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(start_logits, end_logits), each float32 [batch, seq]."""

    def _prepare(self) -> None:
        """Hook for lazy loading (OnnxReader loads its session here)."""

    def close(self) -> None:
        """End the worker threads; later reads run in the calling thread."""
        pool, self._pool = self._pool, None
        close_pool(pool)

    def read(self, question: str, contexts: Sequence[str], top_n: int = 3) -> list[ReaderResult]:
        """One ReaderResult per context, in input order."""
        self._prepare()
        windows: list[Window] = []
        for ci, ctx in enumerate(contexts):
            windows.extend(self.windower.windows(question, ctx, context_index=ci))
        starts, ends = self._run_windows(windows)
        results = []
        for ci, ctx in enumerate(contexts):
            idx = [i for i, w in enumerate(windows) if w.context_index == ci]
            results.append(
                decode_windows(
                    ctx,
                    [windows[i] for i in idx],
                    [starts[i] for i in idx],
                    [ends[i] for i in idx],
                    top_n=top_n,
                    max_answer_tokens=self.max_answer_tokens,
                )
            )
        return results

    def _run_windows(self, windows: list[Window]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # Sort by length so each padded batch wastes little compute; restore order afterwards.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        starts: list[np.ndarray] = [np.empty(0)] * len(windows)
        ends: list[np.ndarray] = [np.empty(0)] * len(windows)
        batches = [order[b : b + self.max_batch_windows]
                   for b in range(0, len(order), self.max_batch_windows)]

        def run(share: list[list[int]]) -> None:
            for chunk in share:
                s, e = self._logits(pad_batch([windows[i] for i in chunk]))
                for row, i in enumerate(chunk):
                    n = len(windows[i])
                    starts[i], ends[i] = s[row, :n], e[row, :n]

        run_shared(self._pool, self.workers, batches,
                   lambda chunk: sum(len(windows[i]) for i in chunk), run)
        return starts, ends
