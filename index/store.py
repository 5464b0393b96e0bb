"""Vector stores: a small ``Store`` protocol and the FAISS implementation.

A store owns an ordered unit table and one vector per unit: the unit at row ``i`` *is* vector id
``i``. The FAISS index is derived from the vector array (rebuilt after a change, or loaded when
it matches), so ids and the unit table cannot drift apart. A second backend (Milvus, pgvector)
is one new class implementing ``Store``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from index.units import Unit

INDEX_TYPES = ("flat", "hnsw", "ivf")


class Store(Protocol):
    dim: int

    @property
    def units(self) -> Sequence[Unit]: ...

    def __len__(self) -> int: ...

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None: ...

    def remove_file(self, file: str) -> None: ...

    def copy(self) -> Store:
        """An independent store with the same rows (copy-on-write updates start here)."""
        ...

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row id, inner product) of the k nearest units, best first."""
        ...

    def save(self, directory: Path) -> None: ...


class FaissStore:
    """Exact inner product (``flat``) by default; ``hnsw`` or ``ivf`` for large corpora."""

    def __init__(self, dim: int, index_type: str = "flat") -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {INDEX_TYPES}, not {index_type!r}")
        self.dim = dim
        self.index_type = index_type
        self._units: list[Unit] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._faiss: faiss.Index | None = None

    @property
    def units(self) -> Sequence[Unit]:
        return self._units

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors

    def __len__(self) -> int:
        return len(self._units)

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        self._units.extend(units)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._faiss = None

    def copy(self) -> FaissStore:
        other = FaissStore(self.dim, self.index_type)
        other._units = list(self._units)
        other._vectors = self._vectors  # never mutated in place, so sharing is safe
        other._faiss = self._faiss
        return other

    def remove_file(self, file: str) -> None:
        keep = [i for i, u in enumerate(self._units) if u.file != file]
        if len(keep) == len(self._units):
            return
        self._units = [self._units[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._faiss = None

    def _build(self) -> faiss.Index:
        n = len(self._vectors)
        index: faiss.Index
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        elif self.index_type == "ivf" and n >= 256:
            nlist = max(1, int(np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(self._vectors)
            index.nprobe = min(nlist, 16)
        else:  # flat, or IVF on too few vectors to train clusters
            index = faiss.IndexFlatIP(self.dim)
        if n:
            index.add(self._vectors)
        return index

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if not self._units or k <= 0:
            return []
        if self._faiss is None:
            self._faiss = self._build()
        q = np.asarray(query, dtype=np.float32).reshape(1, self.dim)
        scores, ids = self._faiss.search(q, min(k, len(self._units)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "units.jsonl", "w", encoding="utf-8") as f:
            for u in self._units:
                f.write(json.dumps([u.file, u.paragraph, u.start, u.end, u.text],
                                   ensure_ascii=False) + "\n")
        np.save(directory / "vectors.npy", self._vectors)
        if self._faiss is None:
            self._faiss = self._build()
        faiss.write_index(self._faiss, str(directory / "faiss.index"))

    @classmethod
    def load(cls, directory: Path, dim: int, index_type: str = "flat") -> FaissStore:
        store = cls(dim, index_type)
        with open(directory / "units.jsonl", encoding="utf-8") as f:
            store._units = [Unit(*json.loads(line)) for line in f]
        store._vectors = np.load(directory / "vectors.npy")
        if store._vectors.shape != (len(store._units), dim):
            raise ValueError(
                f"{directory}: vectors {store._vectors.shape} do not match "
                f"{len(store._units)} units of dimension {dim}"
            )
        index = faiss.read_index(str(directory / "faiss.index"))
        # A FAISS file that disagrees with the table is never trusted: rebuild from vectors.
        store._faiss = index if index.ntotal == len(store._units) and index.d == dim else None
        return store
