"""INT8 ONNX span reader used by the service. Needs onnxruntime, tokenizers and numpy only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from citeqa.index.errors import ModelNotFound
from citeqa.index.onnx_runtime import open_session
from citeqa.service.reader.base import SpanReader
from citeqa.service.reader.decode import ReaderResult, Span
from citeqa.service.settings import BUNDLED_READER
from citeqa.service.workers import make_pool
from citeqa.service.reader.windows import DOC_STRIDE, MAX_LENGTH, MAX_QUESTION_TOKENS, Windower, load_tokenizer


__all__ = ["OnnxReader", "ReaderResult", "Span"]


class OnnxReader(SpanReader):
    """Reads ``model_dir/{model.onnx, tokenizer.json, reader_config.json}``.

    Construction only stores configuration (cheap, safe at import time); ``warm_up()`` loads the
    session and tokenizer, and ``read()`` calls it on first use if the caller did not.
    """

    # One window per call on CPU: padding a batch to its longest window cost more than the
    # extra calls (our questions' answer windows, one thread, p50 / p95: one padded batch 33 /
    # 86 ms, one window at a time 28 / 48 ms), and a window's logits then never depend on
    # which windows share its batch (INT8 activations are quantised per batch).
    max_batch_windows = 1

    def __init__(
        self, model_dir: str | Path = BUNDLED_READER, threads: int = 1, max_answer_tokens: int = 30,
        workers: int = 1,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.max_answer_tokens = max_answer_tokens
        # Windows shared over concurrent one-thread runs, like the cross-encoder's pairs
        # (2 workers: 28 -> 20 ms p50 on our questions' answer windows).
        self.workers = max(1, workers)
        self.model_file = "model.onnx"
        self.config: dict = {}
        self._session = None
        self._output_names: list[str] = []

    @property
    def threshold(self) -> float:
        """No-answer threshold tuned on the dev articles: abstain when null - best > threshold."""
        return float(self.config.get("null_threshold", 0.0))

    def warm_up(self) -> None:
        cfg_path = self.model_dir / "reader_config.json"
        if not cfg_path.is_file():
            raise ModelNotFound(f"no reader model in {self.model_dir} (reader_config.json "
                                "missing): train and export one, or use extractor=sentence")
        self.config = json.loads(cfg_path.read_text())
        self.model_file = self.config.get("model_file", self.model_file)
        if not (self.model_dir / self.model_file).is_file():
            raise ModelNotFound(f"reader model not found: {self.model_dir / self.model_file}")
        self.windower = Windower(
            load_tokenizer(self.model_dir / "tokenizer.json"),
            max_length=int(self.config.get("max_length", MAX_LENGTH)),
            stride=int(self.config.get("doc_stride", DOC_STRIDE)),
            max_question_tokens=int(self.config.get("max_question_tokens", MAX_QUESTION_TOKENS)),
        )
        self._session = open_session(self.model_dir / self.model_file, self.threads)
        self._input_names = {i.name for i in self._session.get_inputs()}
        if self._pool is None:
            self._pool = make_pool(self.workers, "citeqa-reader")
        self._output_names = [o.name for o in self._session.get_outputs()]
        # one tiny call so the first real request does not pay for kernel initialisation
        self.read("warm up?", ["warm up."], top_n=1)

    def _prepare(self) -> None:
        if self._session is None:
            self.warm_up()

    def _logits(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        feeds = {k: v for k, v in batch.items() if k in self._input_names}
        start, end = self._session.run(["start_logits", "end_logits"], feeds)
        return start, end
