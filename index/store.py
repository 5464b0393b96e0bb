"""Vector stores: the small ``Store`` protocol, the FAISS implementation, and the one factory
that picks a store class by name (the ``store`` setting, recorded in the index manifest).

A store owns an ordered unit table and one vector per unit: the unit at row ``i`` *is* vector id
``i``. ``CorpusIndex`` and retrieval use nothing but this protocol, so a second backend
(Milvus, pgvector) is one new class plus one ``register_store`` call; the store test suite
(tests/test_store.py) runs against every registered class.

In ``FaissStore`` the FAISS index is derived from the vector array (rebuilt after a change, or
loaded when it matches), so ids and the unit table cannot drift apart.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from citeqa.index.errors import IndexProblem, InvalidInput
from citeqa.index.units import Unit

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
# ``auto``: exact search below this many vectors, HNSW from there on. Measured (make
# bench-scale, docs/scaling.md): flat search is 0.4 ms at 10k vectors, 7.9 ms at 100k and 61 ms
# at 1M, where HNSW answers in 0.5-0.7 ms at recall@10 0.99 (100k) and 0.96 (1M).
AUTO_EXACT_BELOW = 100_000


def resolve_index_type(index_type: str, n: int) -> str:
    """The index a store of ``n`` vectors builds for ``index_type`` (``auto`` follows size)."""
    if index_type == "auto":
        return "flat" if n < AUTO_EXACT_BELOW else "hnsw"
    return index_type


@dataclass(frozen=True)
class StoreOptions:
    """How to reach a store that lives outside the index folder (Milvus). Not recorded in the
    manifest: the token is a secret, and the same index may be reached by another address.
    ``FaissStore`` ignores them."""

    uri: str | None = None
    token: str | None = None
    prefix: str = "citeqa"  # collection names: <prefix>_<role>


class Store(Protocol):
    """Units and their vectors, searchable by inner product (vectors are normalised)."""

    dim: int

    @property
    def units(self) -> Sequence[Unit]:
        """The unit table: ``units[i]`` is the unit of vector id ``i``."""
        ...

    def __len__(self) -> int: ...

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        """Append units with their vectors (ids continue from ``len(self)``)."""
        ...

    def remove_file(self, file: str) -> None:
        """Drop a file's units; later ids move down so ids stay dense (0..len-1)."""
        ...

    def copy(self) -> Store:
        """An independent store with the same rows (copy-on-write updates start here)."""
        ...

    def search(self, queries: np.ndarray, k: int, files: Collection[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``queries`` (n x dim): ids (n x k', int64) and inner products
        (n x k', float32) of its k' = min(k, len) nearest units, best first. An id of -1
        (score -inf) pads a row an approximate index could not fill. With ``files``, only
        units of those files are candidates."""
        ...

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids`` (len(ids) x dim), in that order."""
        ...

    def save(self, directory: Path) -> None:
        """Write everything ``open_store`` needs to load this store from ``directory``."""
        ...


class SharedStore(Store, Protocol):
    """A store in an engine that other processes write too (Milvus): besides the protocol,
    it can take rows for units already there and forget rows without touching the engine."""

    def attach(self, units: Sequence[Unit]) -> None:
        """Add table rows for units the engine already holds (no vectors sent)."""
        ...

    def detach(self, file: str) -> None:
        """Forget a file's rows here only (it was removed from the engine elsewhere)."""
        ...

    def stored(self, units: Sequence[Unit]) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``units`` the engine already holds (a boolean mask) and their vectors
        (zeros where it does not): a re-run embeds only the others."""
        ...


class Catalog(Protocol):
    """The shared list of documents and their texts, for stores that many replicas share."""

    def version(self) -> str:
        """Changes whenever the list does: one cheap call tells a replica to look again."""
        ...

    def listing(self) -> dict[str, tuple[str, str, int]]:
        """file -> (sha256, source, paragraphs)."""
        ...

    def text(self, file: str) -> str: ...

    def publish(self, documents: Sequence[tuple[str, str, str, str, int]],
                removed: Sequence[str] = ()) -> None:
        """Write (name, text, sha256, source, paragraphs) and drop ``removed``."""
        ...

    def drop(self) -> None: ...


class StoreClass(Protocol):
    """What the factory needs of a store class: make an empty one, or load a saved one.
    ``role`` names the unit kind it holds ("passages", "sentences"): a shared engine keeps
    one collection per role."""

    def __call__(self, dim: int, index_type: str = "flat", *, role: str = "units",
                 options: StoreOptions | None = None) -> Store: ...

    def load(self, directory: Path, dim: int, index_type: str = "flat", *, role: str = "units",
             options: StoreOptions | None = None) -> Store: ...


class FaissStore:
    """Exact inner product (``flat``) by default; ``hnsw`` or ``ivf`` for large corpora."""

    def __init__(self, dim: int, index_type: str = "flat", *, role: str = "units",
                 options: StoreOptions | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {INDEX_TYPES}, not {index_type!r}")
        self.dim = dim
        self.index_type = index_type
        self._units: list[Unit] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        # Room to grow: ``_vectors`` is a view of its first rows, and rows past it belong to
        # this store alone. Adding document by document then copies each vector a few times
        # in all instead of once per add (quadratic at 1M units: docs/scaling.md).
        self._buffer: np.ndarray | None = None
        self._faiss: faiss.Index | None = None

    @property
    def units(self) -> Sequence[Unit]:
        return self._units

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        return self._vectors[np.asarray(ids, dtype=np.int64)]

    def __len__(self) -> int:
        return len(self._units)

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        n, k = len(self._vectors), len(vectors)
        buffer = self._buffer
        if buffer is None or n + k > len(buffer):
            # Grow by a quarter (at least 1,024 rows): amortised O(1) copies per vector, at
            # most 25% spare memory.
            buffer = np.empty((max(n + k, n + n // 4, 1024), self.dim), dtype=np.float32)
            buffer[:n] = self._vectors
        buffer[n:n + k] = vectors
        self._buffer = buffer
        self._units.extend(units)
        self._vectors = buffer[:n + k]
        self._faiss = None

    def copy(self) -> FaissStore:
        other = FaissStore(self.dim, self.index_type)
        other._units = list(self._units)
        # Rows in use are never written again, so both stores can share them; the spare rows
        # stay this store's (the copy's first add moves it to a buffer of its own).
        other._vectors = self._vectors
        other._faiss = self._faiss
        return other

    def remove_file(self, file: str) -> None:
        keep = [i for i, u in enumerate(self._units) if u.file != file]
        if len(keep) == len(self._units):
            return
        self._units = [self._units[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._buffer = None
        self._faiss = None

    def _build(self) -> faiss.Index:
        n = len(self._vectors)
        kind = resolve_index_type(self.index_type, n)
        index: faiss.Index
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        elif kind == "ivf" and n >= 256:
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

    def search(self, queries: np.ndarray, k: int, files: Collection[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        if files is not None:
            return self._search_rows(q, k, [i for i, u in enumerate(self._units)
                                            if u.file in files])
        k = min(k, len(self._units))
        if k <= 0:
            return _empty(len(q))
        if self._faiss is None:
            self._faiss = self._build()
        scores, ids = self._faiss.search(q, k)
        return ids.astype(np.int64), np.where(ids >= 0, scores, -np.inf).astype(np.float32)

    def _search_rows(self, q: np.ndarray, k: int, rows: list[int]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search among ``rows`` only (a filter by file is a small share of the corpus)."""
        k = min(k, len(rows))
        if k <= 0:
            return _empty(len(q))
        ids = np.asarray(rows, dtype=np.int64)
        scores = q @ self._vectors[ids].T
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return ids[best], np.take_along_axis(scores, best, axis=1).astype(np.float32)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_units(directory / "units.jsonl", self._units)
        np.save(directory / "vectors.npy", self._vectors)
        if self._faiss is None:
            self._faiss = self._build()
        faiss.write_index(self._faiss, str(directory / "faiss.index"))

    # Files ``save`` writes that are derived from the others: the index rebuilds them when
    # they are damaged (``forget_derived``) instead of failing.
    derived_files = ("faiss.index",)

    def forget_derived(self) -> None:
        """Drop the loaded FAISS index: it is rebuilt from the vectors on the next search."""
        self._faiss = None

    @classmethod
    def load(cls, directory: Path, dim: int, index_type: str = "flat", *, role: str = "units",
             options: StoreOptions | None = None) -> FaissStore:
        """Load a saved store; a damaged unit table or vector file raises ``IndexProblem``
        naming it, an unreadable or stale FAISS file is rebuilt from the vectors."""
        store = cls(dim, index_type)
        vectors_path = directory / "vectors.npy"
        store._units = read_units(directory / "units.jsonl")
        try:
            vectors = np.load(vectors_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexProblem(f"{vectors_path}: unreadable vectors ({type(exc).__name__}: "
                               f"{str(exc)[:200]}).") from None
        if vectors.dtype != np.float32 or vectors.shape != (len(store._units), dim):
            raise IndexProblem(
                f"{vectors_path}: vectors {vectors.dtype} {vectors.shape} do not match "
                f"{len(store._units)} units of dimension {dim}."
            )
        store._vectors = vectors
        try:
            index = faiss.read_index(str(directory / "faiss.index"))
        except RuntimeError:  # missing or unreadable: derived from the vectors, so rebuild
            index = None
        # A FAISS file that disagrees with the table, or is of another type than this store
        # builds now (the setting changed, or ``auto`` crossed its size), is never used:
        # rebuilt from the vectors on the first search.
        store._faiss = (index if index is not None and index.ntotal == len(store._units)
                        and index.d == dim and _is_kind(index, resolve_index_type(
                            index_type, len(store._units))) else None)
        return store


def write_units(path: Path, units: Sequence[Unit]) -> None:
    """A store's unit table as JSON lines (what ``read_units`` reads back)."""
    with open(path, "w", encoding="utf-8") as f:
        for u in units:
            f.write(json.dumps([u.file, u.paragraph, u.start, u.end, u.text],
                               ensure_ascii=False) + "\n")


def read_units(path: Path) -> list[Unit]:
    """The unit table ``write_units`` wrote; damage raises ``IndexProblem`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [Unit(*json.loads(line)) for line in f]
    except (OSError, ValueError, TypeError) as exc:
        raise IndexProblem(f"{path}: unreadable unit table ({type(exc).__name__}: "
                           f"{str(exc)[:200]}).") from None


def _is_kind(index: faiss.Index, kind: str) -> bool:
    if kind == "hnsw":
        return isinstance(index, faiss.IndexHNSWFlat)
    if kind == "ivf":  # on too few vectors to train, an IVF store is flat
        return isinstance(index, (faiss.IndexIVFFlat, faiss.IndexFlatIP))
    return isinstance(index, faiss.IndexFlatIP)


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.float32)


# -- the factory -------------------------------------------------------------------------------

STORES: dict[str, StoreClass] = {"faiss": FaissStore}
# Stores whose client library is an optional extra: imported only when asked for by name.
# Shared stores also name their catalog class (the document list every replica reads).
_OPTIONAL = {"milvus": ("citeqa.index.milvus_store", "MilvusStore", "citeqa[milvus]")}
_CATALOGS = {"milvus": "MilvusCatalog"}


def register_store(name: str, cls: StoreClass) -> None:
    """Make a store class available to the ``store`` setting under ``name``."""
    STORES[name] = cls


def _store_class(name: str) -> StoreClass:
    if name not in STORES and name in _OPTIONAL:
        module, attr, extra = _OPTIONAL[name]
        try:
            register_store(name, getattr(importlib.import_module(module), attr))
        except ImportError as exc:
            raise InvalidInput(f"the {name} store needs `pip install '{extra}'` ({exc})"
                               ) from None
    try:
        return STORES[name]
    except KeyError:
        known = sorted({*STORES, *_OPTIONAL})
        raise InvalidInput(f"unknown store {name!r}: choose from {', '.join(known)}") from None


def open_catalog(name: str, options: StoreOptions | None = None) -> Catalog | None:
    """The shared document catalog of a shared store; None for a store in the index folder."""
    if name not in _CATALOGS:
        return None
    _store_class(name)  # imports the module, with the same error when the extra is missing
    module = importlib.import_module(_OPTIONAL[name][0])
    return getattr(module, _CATALOGS[name])(options)


def is_shared(store: Store) -> bool:
    return all(callable(getattr(store, m, None)) for m in ("attach", "detach", "stored"))


def new_store(name: str, dim: int, index_type: str = "flat", *, role: str = "units",
              options: StoreOptions | None = None) -> Store:
    """An empty store of the named class."""
    return _store_class(name)(dim, index_type, role=role, options=options)


def open_store(name: str, directory: Path, dim: int, index_type: str = "flat", *,
               role: str = "units", options: StoreOptions | None = None) -> Store:
    """A store of the named class, loaded from what its ``save`` wrote to ``directory``."""
    return _store_class(name).load(directory, dim, index_type, role=role, options=options)
