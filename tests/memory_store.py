"""A second ``Store`` backend, in plain numpy, that exists to prove the seam: it is one class,
registered under a name, and runs the same store test suite and a whole pipeline that FAISS
runs (tests/test_store.py)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from citeqa.index.units import Unit


class MemoryStore:
    """Exact inner-product search by one matrix product; saved as two plain files."""

    def __init__(self, dim: int, index_type: str = "flat", *, role: str = "units",
                 options: object = None) -> None:
        self.dim = dim
        self.index_type = index_type  # accepted and ignored: the search is always exact
        self._units: list[Unit] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    @property
    def units(self) -> Sequence[Unit]:
        return self._units

    def __len__(self) -> int:
        return len(self._units)

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        self._units = [*self._units, *units]
        self._vectors = np.concatenate([self._vectors, vectors])

    def remove_file(self, file: str) -> None:
        keep = [i for i, u in enumerate(self._units) if u.file != file]
        self._units = [self._units[i] for i in keep]
        self._vectors = self._vectors[keep]

    def copy(self) -> MemoryStore:
        other = MemoryStore(self.dim, self.index_type)
        other._units, other._vectors = list(self._units), self._vectors
        return other

    def search(self, queries: np.ndarray, k: int, files: Collection[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(k, len(self._units))
        scores = q @ self._vectors.T
        if files is not None:
            outside = np.array([u.file not in files for u in self._units], dtype=bool)
            scores[:, outside] = -np.inf
            k = min(k, int((~outside).sum()))
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return ids.astype(np.int64), np.take_along_axis(scores, ids, axis=1).astype(np.float32)

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors[np.asarray(ids, dtype=np.int64)]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        rows = [[u.file, u.paragraph, u.start, u.end, u.text] for u in self._units]
        (directory / "units.json").write_text(json.dumps(rows), encoding="utf-8")
        np.save(directory / "vectors.npy", self._vectors)

    @classmethod
    def load(cls, directory: Path, dim: int, index_type: str = "flat", *, role: str = "units",
             options: object = None) -> MemoryStore:
        store = cls(dim, index_type)
        rows = json.loads((directory / "units.json").read_text(encoding="utf-8"))
        store._units = [Unit(*row) for row in rows]
        store._vectors = np.load(directory / "vectors.npy")
        return store
