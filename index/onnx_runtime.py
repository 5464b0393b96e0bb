"""The one way citeqa opens an onnxruntime session: CPU, with an explicit thread count.

Every model on the query path (question embedder, cross-encoder, reader) runs through this, so
thread settings are decided in one place: ``threads`` intra-op threads (1 by default: on a busy
2-core machine extra intra-op threads spin while they wait for each other) and no inter-op
parallelism; concurrency comes from running several one-thread calls of one session
(``citeqa.service.workers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_session(model: str | Path | bytes, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` of a model file (or its serialised bytes)."""
    import onnxruntime as ort  # lazily: importing citeqa stays cheap

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
