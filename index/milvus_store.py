"""Milvus as the shared store: the units and vectors of every replica, and the catalog of
documents (names, hashes, texts) that lets any replica rebuild its local view.

Works with Milvus Lite (``milvus-lite server``), Milvus Standalone or Distributed and Zilliz
Cloud through the same client (``pymilvus``), from ``citeqa[milvus]``.

Collections (``<prefix>`` is the ``milvus_prefix`` setting):

- ``<prefix>_units``: one row per unit, both kinds (``kind`` = "passages" / "sentences"); the
  primary key is a hash of the kind, the file and the unit's offsets and text, so writing the
  same unit twice is one row (upsert by content hash) and a changed file gets new keys.
  HNSW (or FLAT / IVF_FLAT) index, COSINE metric, strong consistency.
- ``<prefix>_documents``: file name, sha256, source, paragraph and text-chunk counts.
- ``<prefix>_texts``: document texts in chunks (a VARCHAR holds at most 65,535 bytes), keyed
  by content hash.
- ``<prefix>_meta``: the catalog's version token, replaced after every change, so a replica
  finds out with one primary-key lookup whether it has to look at the document list again.

A replica's row ids are its own (``MilvusStore.units``, the local unit table, which is only a
cache of what the catalog's texts produce); the engine's keys map to them. A search that finds
a unit this replica does not know yet (written by another replica a moment ago) skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from citeqa.index.errors import IndexProblem
from citeqa.index.store import INDEX_TYPES, StoreOptions, read_units, write_units
from citeqa.index.units import Unit

# pymilvus logs every failed call with a traceback on its own handler; citeqa reports the
# failure itself (IndexProblem, with the address), so its log only keeps what is fatal.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

DEFAULT_URI = "http://127.0.0.1:19530"
MAX_VARCHAR = 65_535  # bytes, Milvus' limit for one VARCHAR value
TEXT_CHUNK = MAX_VARCHAR // 4  # characters: at most 4 UTF-8 bytes each
_WRITE_ROWS = 2_000  # rows per insert: gRPC messages stay well under 64 MiB at dim 384
# ``auto`` is HNSW: the engine builds its index as rows arrive, and at 10k rows HNSW is as good
# as exact (recall@10 0.9985 in make bench-scale).
_INDEX = {"auto": ("HNSW", {"M": 16, "efConstruction": 200}), "flat": ("FLAT", {}), "hnsw": ("HNSW", {"M": 16, "efConstruction": 200}),
          "ivf": ("IVF_FLAT", {"nlist": 1024})}
_SEARCH = {"auto": {"ef": 128}, "flat": {}, "hnsw": {"ef": 128}, "ivf": {"nprobe": 16}}
_DUMMY_DIM = 2  # Milvus needs a vector field in every collection; catalog rows carry zeros


def _key(*parts: object) -> int:
    """A signed 63-bit key from a hash of ``parts`` (Milvus INT64 primary keys)."""
    digest = hashlib.blake2b(json.dumps(parts, ensure_ascii=False).encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def file_key(name: str) -> int:
    """The INT64 that stands for a file name in filters: no quoting of names in expressions."""
    return _key("file", name)


def unit_key(kind: str, unit: Unit) -> int:
    return _key(kind, unit.file, unit.paragraph, unit.start, unit.end, unit.text)


def _clip(text: str) -> str:
    """At most MAX_VARCHAR bytes of UTF-8, cut at a character boundary (the unit text in the
    engine is informational: offsets and texts are always recomputed from the document)."""
    data = text.encode("utf-8")
    if len(data) <= MAX_VARCHAR:
        return text
    return data[:MAX_VARCHAR].decode("utf-8", errors="ignore")


# -- connections -------------------------------------------------------------------------------

_clients: dict[tuple[str, str | None], MilvusClient] = {}
# pymilvus pings an idle channel every 10 s; Milvus Lite's gRPC server allows one ping per 5
# minutes without calls and answers more with GOAWAY "too_many_pings" (logged by gRPC on
# stderr while an index is being embedded). Ping as often as servers allow.
_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000,
                 "grpc.keepalive_permit_without_calls": False}
_clients_lock = threading.Lock()


def client_for(options: StoreOptions | None) -> MilvusClient:
    """One client per address and token in this process (gRPC channels are thread-safe)."""
    options = options or StoreOptions()
    uri = options.uri or DEFAULT_URI
    key = (uri, options.token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                client = MilvusClient(uri=uri, token=options.token or "", timeout=10,
                                      grpc_options=_GRPC_OPTIONS)
            except Exception as exc:  # noqa: BLE001 - connection errors come in many types
                raise IndexProblem(f"cannot reach Milvus at {uri} ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}). Start it, or set CITEQA_MILVUS_URI "
                                   "(and CITEQA_MILVUS_TOKEN) to a running one.") from None
            _clients[key] = client
        return client


def _call(what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kwargs)
    except MilvusException as exc:
        raise IndexProblem(f"Milvus {what} failed: {exc.message if hasattr(exc, 'message') else exc}"
                           ) from None


def _ensure(client: MilvusClient, name: str, schema_fields: Iterable[tuple], vector: str,
            index: tuple[str, str, dict]) -> None:
    """Create the collection with an explicit schema and its index, unless it exists; an
    existing one is loaded (after a restart of the engine its collections are released)."""
    if _call("has_collection", client.has_collection, name):
        _call("load_collection", client.load_collection, name)
        return
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    for field_name, dtype, kwargs in schema_fields:
        schema.add_field(field_name, dtype, **kwargs)
    params = client.prepare_index_params()
    index_type, metric, extra = index
    params.add_index(vector, index_type=index_type, metric_type=metric, params=extra)
    try:
        client.create_collection(name, schema=schema, index_params=params,
                                 consistency_level="Strong")
    except MilvusException as exc:
        # Another replica created it between our check and our create: that is fine.
        if not _call("has_collection", client.has_collection, name):
            raise IndexProblem(f"cannot create the Milvus collection {name}: {exc}") from None


def _check_prefix(prefix: str) -> str:
    if not prefix or not (prefix[0].isalpha() or prefix[0] == "_") or not all(
            c.isascii() and (c.isalnum() or c == "_") for c in prefix) or len(prefix) > 200:
        raise ValueError(f"Milvus collection prefix {prefix!r}: letters, digits and _, "
                         "starting with a letter or _")
    return prefix


# -- the store ---------------------------------------------------------------------------------

class MilvusStore:
    """The ``Store`` protocol over one Milvus collection shared by every replica.

    ``index_type``: ``hnsw`` (the default for Milvus), ``flat`` (exact) or ``ivf``; the metric
    is COSINE (our vectors are normalised, so it equals the inner product FAISS uses).
    """

    def __init__(self, dim: int, index_type: str = "hnsw", *, role: str = "units",
                 options: StoreOptions | None = None) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index type must be one of {INDEX_TYPES}, not {index_type!r}")
        self.dim = dim
        self.index_type = index_type
        self.kind = role
        self.options = options or StoreOptions()
        self.collection = f"{_check_prefix(self.options.prefix)}_units"
        self._client = client_for(self.options)
        self._units: list[Unit] = []
        self._keys: list[int] = []
        self._rows: dict[int, int] = {}
        self._unflushed = 0  # rows written since the last flush (see save)
        self._ensure_collection()

    def _ensure_collection(self) -> None:
        index_type, params = _INDEX[self.index_type]
        _ensure(self._client, self.collection, [
            ("id", DataType.INT64, {"is_primary": True}),
            ("kind", DataType.VARCHAR, {"max_length": 16}),
            ("file", DataType.VARCHAR, {"max_length": 1024}),
            ("file_id", DataType.INT64, {}),
            ("paragraph", DataType.INT64, {}),
            ("start", DataType.INT64, {}),
            ("end", DataType.INT64, {}),
            ("text", DataType.VARCHAR, {"max_length": MAX_VARCHAR}),
            ("content_hash", DataType.VARCHAR, {"max_length": 64}),
            ("vector", DataType.FLOAT_VECTOR, {"dim": self.dim}),
        ], "vector", (index_type, "COSINE", params))
        found = _call("describe_collection", self._client.describe_collection, self.collection)
        dims = [f.get("params", {}).get("dim") for f in found.get("fields", [])
                if f.get("name") == "vector"]
        if dims and int(dims[0]) != self.dim:
            raise IndexProblem(f"the Milvus collection {self.collection} holds vectors of "
                               f"dimension {dims[0]}, this model makes {self.dim}: use another "
                               "CITEQA_MILVUS_PREFIX or drop the collection.")

    # -- the local table -----------------------------------------------------------------

    @property
    def units(self) -> Sequence[Unit]:
        return self._units

    def __len__(self) -> int:
        return len(self._units)

    def attach(self, units: Sequence[Unit]) -> None:
        """Add rows for units that are already in the engine (written by any replica)."""
        for unit in units:
            key = unit_key(self.kind, unit)
            self._rows[key] = len(self._units)
            self._units.append(unit)
            self._keys.append(key)

    def detach(self, file: str) -> None:
        """Forget a file's units here only (another replica removed it from the engine)."""
        keep = [i for i, u in enumerate(self._units) if u.file != file]
        if len(keep) == len(self._units):
            return
        self._units = [self._units[i] for i in keep]
        self._keys = [self._keys[i] for i in keep]
        self._rows = {key: row for row, key in enumerate(self._keys)}

    def copy(self) -> MilvusStore:
        other = object.__new__(MilvusStore)
        other.__dict__.update(self.__dict__)
        other._units, other._keys, other._rows = list(self._units), list(self._keys), dict(
            self._rows)
        return other

    # -- engine writes -------------------------------------------------------------------

    def add(self, units: Sequence[Unit], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(units) != len(vectors):
            raise ValueError(f"{len(units)} units but {len(vectors)} vectors")
        rows = [{"id": unit_key(self.kind, u), "kind": self.kind, "file": u.file,
                 "file_id": file_key(u.file), "paragraph": u.paragraph, "start": u.start,
                 "end": u.end, "text": _clip(u.text),
                 "content_hash": hashlib.sha256(u.text.encode()).hexdigest(),
                 "vector": v.tolist()} for u, v in zip(units, vectors)]
        for i in range(0, len(rows), _WRITE_ROWS):
            _call("upsert", self._client.upsert, self.collection, rows[i:i + _WRITE_ROWS])
        self._unflushed += len(rows)
        self.attach(units)

    def remove_file(self, file: str) -> None:
        _call("delete", self._client.delete, self.collection,
              filter=f'kind == "{self.kind}" and file_id == {file_key(file)}')
        self._unflushed += 1  # deletions are buffered in the growing segment too
        self.detach(file)

    def stored(self, units: Sequence[Unit]) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``units`` the engine already has, and their vectors (zeros for the rest)."""
        keys = [unit_key(self.kind, u) for u in units]
        found: dict[int, list[float]] = {}
        for i in range(0, len(keys), _WRITE_ROWS):
            rows = _call("query", self._client.query, self.collection,
                         ids=keys[i:i + _WRITE_ROWS], output_fields=["vector"],
                         consistency_level="Strong")
            found.update((int(r["id"]), r["vector"]) for r in rows)
        mask = np.array([k in found for k in keys], dtype=bool)
        vectors = np.zeros((len(keys), self.dim), dtype=np.float32)
        for n, key in enumerate(keys):
            if key in found:
                vectors[n] = found[key]
        return mask, vectors

    # -- reads ---------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, files: Collection[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(k, len(self._units))
        ids = np.full((len(q), max(k, 0)), -1, dtype=np.int64)
        scores = np.full((len(q), max(k, 0)), -np.inf, dtype=np.float32)
        if k <= 0 or not len(q):
            return ids, scores
        expr = f'kind == "{self.kind}"'
        if files is not None:
            wanted = sorted({file_key(f) for f in files})
            if not wanted:
                return ids[:, :0], scores[:, :0]
            expr += f" and file_id in {wanted}"
        hits = _call("search", self._client.search, self.collection, data=q.tolist(), limit=k,
                     filter=expr, anns_field="vector", output_fields=[],
                     search_params={"metric_type": "COSINE",
                                    "params": {**_SEARCH[self.index_type]}},
                     consistency_level="Strong")
        for n, row_hits in enumerate(hits):
            col = 0
            for hit in row_hits:
                row = self._rows.get(int(hit["id"]))
                if row is None:  # written by another replica, not in our table yet
                    continue
                ids[n, col], scores[n, col] = row, float(hit["distance"])
                col += 1
        return ids, scores

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        keys = [self._keys[int(i)] for i in ids]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        if not keys:
            return out
        rows = _call("query", self._client.query, self.collection, ids=sorted(set(keys)),
                     output_fields=["vector"], consistency_level="Strong")
        found = {int(r["id"]): r["vector"] for r in rows}
        for n, key in enumerate(keys):
            if key in found:  # removed meanwhile by another replica: similarity 0
                out[n] = found[key]
        return out

    # -- the local cache ------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """The local table (the vectors are in the engine), after flushing what this store
        wrote: a save ends a batch of writes (an index run, an upload), and a flush seals
        the engine's growing segment so its vector index covers the rows. Unflushed rows are
        searched by brute force, in Python on Milvus Lite: 0.5 s per search at 10k rows
        (docs/scaling.md)."""
        if self._unflushed:
            _call("flush", self._client.flush, self.collection)
            self._unflushed = 0
        directory.mkdir(parents=True, exist_ok=True)
        write_units(directory / "units.jsonl", self._units)
        (directory / "milvus.json").write_text(json.dumps(
            {"collection": self.collection, "kind": self.kind}), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, dim: int, index_type: str = "hnsw", *, role: str = "units",
             options: StoreOptions | None = None) -> MilvusStore:
        store = cls(dim, index_type, role=role, options=options)
        store.attach(read_units(directory / "units.jsonl"))
        return store


# -- the shared catalog -------------------------------------------------------------------------

class MilvusCatalog:
    """The document list and texts in Milvus: what makes replicas stateless."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = options or StoreOptions()
        prefix = _check_prefix(self.options.prefix)
        self._client = client_for(self.options)
        self._docs, self._texts, self._meta = (f"{prefix}_documents", f"{prefix}_texts",
                                               f"{prefix}_meta")
        dummy = ("dummy", DataType.FLOAT_VECTOR, {"dim": _DUMMY_DIM})
        flat = ("FLAT", "L2", {})
        _ensure(self._client, self._docs, [
            ("file_id", DataType.INT64, {"is_primary": True}),
            ("file", DataType.VARCHAR, {"max_length": 1024}),
            ("sha256", DataType.VARCHAR, {"max_length": 64}),
            ("source", DataType.VARCHAR, {"max_length": 16}),
            ("paragraphs", DataType.INT64, {}),
            ("chunks", DataType.INT64, {}),
            dummy], "dummy", flat)
        _ensure(self._client, self._texts, [
            ("id", DataType.VARCHAR, {"is_primary": True, "max_length": 80}),
            ("sha256", DataType.VARCHAR, {"max_length": 64}),
            ("text", DataType.VARCHAR, {"max_length": MAX_VARCHAR}),
            dummy], "dummy", flat)
        _ensure(self._client, self._meta, [
            ("key", DataType.VARCHAR, {"is_primary": True, "max_length": 64}),
            ("value", DataType.VARCHAR, {"max_length": 256}),
            dummy], "dummy", flat)

    def version(self) -> str:
        """A token that changes whenever the document list does ("" before the first)."""
        rows = _call("query", self._client.query, self._meta, ids=["version"],
                     output_fields=["value"], consistency_level="Strong")
        return str(rows[0]["value"]) if rows else ""

    def listing(self) -> dict[str, tuple[str, str, int]]:
        """file -> (sha256, source, paragraphs) of every shared document."""
        out: dict[str, tuple[str, str, int]] = {}
        iterator = self._client.query_iterator(
            self._docs, batch_size=1000, filter="",
            output_fields=["file", "sha256", "source", "paragraphs"])
        try:
            while True:
                batch = _call("query", iterator.next)
                if not batch:
                    break
                for r in batch:
                    out[r["file"]] = (r["sha256"], r["source"], int(r["paragraphs"]))
        finally:
            iterator.close()
        return out

    def text(self, file: str) -> str:
        rows = _call("query", self._client.query, self._docs, ids=[file_key(file)],
                     output_fields=["sha256", "chunks"], consistency_level="Strong")
        if not rows:
            raise KeyError(file)
        sha, chunks = rows[0]["sha256"], int(rows[0]["chunks"])
        ids = [f"{sha}:{n}" for n in range(chunks)]
        parts = _call("query", self._client.query, self._texts, ids=ids,
                      output_fields=["text"], consistency_level="Strong")
        by_id = {p["id"]: p["text"] for p in parts}
        if len(by_id) != chunks:
            raise IndexProblem(f"the shared text of {file} is incomplete in Milvus "
                               f"({len(by_id)} of {chunks} chunks)")
        return "".join(by_id[i] for i in ids)

    def publish(self, documents: Sequence[tuple[str, str, str, str, int]],
                removed: Sequence[str] = ()) -> None:
        """Write (name, text, sha256, source, paragraphs) rows and drop ``removed``; then a new
        version token, so other replicas look again. Texts are written before the rows that
        point at them, so a reader never finds a document without its text."""
        zero = [0.0] * _DUMMY_DIM
        for name, text, sha, source, paragraphs in documents:
            chunks = [text[i:i + TEXT_CHUNK] for i in range(0, len(text), TEXT_CHUNK)] or [""]
            _call("upsert", self._client.upsert, self._texts, [
                {"id": f"{sha}:{n}", "sha256": sha, "text": chunk, "dummy": zero}
                for n, chunk in enumerate(chunks)])
            _call("upsert", self._client.upsert, self._docs, [{
                "file_id": file_key(name), "file": name, "sha256": sha, "source": source,
                "paragraphs": paragraphs, "chunks": len(chunks), "dummy": zero}])
        if removed:
            _call("delete", self._client.delete, self._docs,
                  ids=[file_key(name) for name in removed])
        self.touch()

    def touch(self) -> None:
        _call("upsert", self._client.upsert, self._meta,
              [{"key": "version", "value": uuid.uuid4().hex, "dummy": [0.0] * _DUMMY_DIM}])

    def drop(self) -> None:
        """Remove the catalog's collections (``citeqa index --rebuild`` with Milvus)."""
        for name in (self._docs, self._texts, self._meta):
            _call("drop_collection", self._client.drop_collection, name)


def drop_units(options: StoreOptions | None) -> None:
    """Remove the shared units collection (a rebuild starts from an empty one)."""
    client = client_for(options)
    name = f"{_check_prefix((options or StoreOptions()).prefix)}_units"
    if _call("has_collection", client.has_collection, name):
        _call("drop_collection", client.drop_collection, name)
