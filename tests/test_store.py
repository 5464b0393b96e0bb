"""The store contract (``citeqa.index.store.Store``), run against every backend: FAISS in each
index type, the in-memory numpy store of tests/memory_store.py, and Milvus (a Milvus Lite
server on loopback, started for the session). A backend that passes this suite can be chosen by
the ``store`` setting; the last tests run a whole QA on the second one and on Milvus."""

from __future__ import annotations

import numpy as np
import pytest

from citeqa.index.errors import InvalidInput
from citeqa.index.store import (
    STORES, FaissStore, is_shared, new_store, open_store, register_store,
)
from citeqa.index.units import Unit

from .memory_store import MemoryStore

register_store("memory", MemoryStore)

BACKENDS = [("faiss", "auto"), ("faiss", "flat"), ("faiss", "hnsw"), ("faiss", "ivf"),
            ("memory", "flat"),
            ("milvus", "hnsw"), ("milvus", "flat")]
DIM = 8


class Backend:
    """A store class by name and index type, with its options (Milvus: this test's own
    collections on the session's server)."""

    def __init__(self, name: str, index_type: str, options=None) -> None:
        self.name, self.index_type, self.options = name, index_type, options

    def new(self, dim: int = DIM, role: str = "sentences"):
        return new_store(self.name, dim, self.index_type, role=role, options=self.options)

    def open(self, directory, dim: int = DIM, role: str = "sentences"):
        return open_store(self.name, directory, dim, self.index_type, role=role,
                          options=self.options)


@pytest.fixture(params=BACKENDS, ids=[f"{s}-{t}" for s, t in BACKENDS])
def backend(request) -> Backend:
    name, index_type = request.param
    options = request.getfixturevalue("milvus_options") if name == "milvus" else None
    return Backend(name, index_type, options)


def _data(n: int = 300):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    units = [Unit(f"f{i % 3}.txt", i, i, i + 1, f"t{i}") for i in range(n)]
    return units, vecs


def _texts(store, ids) -> list[str]:
    return [store.units[int(i)].text for i in ids if i >= 0]


def test_search_finds_each_unit_by_its_own_vector(backend) -> None:
    units, vecs = _data()
    store = backend.new()
    store.add(units, vecs)
    assert len(store) == 300 and list(store.units) == units
    ids, scores = store.search(vecs[[7, 42, 299]], 5)
    assert ids.shape == scores.shape == (3, 5)
    assert _texts(store, ids[:, 0]) == ["t7", "t42", "t299"]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)  # normalised: a unit's own vector
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(store.vectors_for([42, 7]), vecs[[42, 7]])


def test_k_larger_than_the_store_and_empty_stores(backend) -> None:
    units, vecs = _data(4)
    store = backend.new()
    ids, scores = store.search(vecs[:1], 3)
    assert ids.shape == (1, 0) and scores.shape == (1, 0)
    store.add(units, vecs)
    ids, _ = store.search(vecs[:2], 10)
    assert ids.shape == (2, 4) and sorted(ids[0].tolist()) == [0, 1, 2, 3]


def test_remove_file_keeps_ids_dense_and_search_right(backend) -> None:
    units, vecs = _data()
    store = backend.new()
    store.add(units, vecs)
    store.remove_file("f1.txt")
    store.remove_file("nothing.txt")  # unknown files are a no-op
    assert len(store) == 200 and all(u.file != "f1.txt" for u in store.units)
    ids, _ = store.search(vecs[[9, 12]], 1)  # both in f0.txt, which stays
    assert _texts(store, ids[:, 0]) == ["t9", "t12"]
    # Row i of the unit table is vector id i, also after the removal.
    for i in range(0, 200, 37):
        ids, _ = store.search(store.vectors_for([i]), 1)
        assert ids[0, 0] == i


def test_a_copy_has_its_own_unit_table(backend) -> None:
    units, vecs = _data()
    store = backend.new()
    store.add(units[:200], vecs[:200])
    copy = store.copy()
    copy.remove_file("f0.txt")
    copy.add(units[200:], vecs[200:])
    assert len(store) == 200 and list(store.units) == units[:200]
    assert _texts(copy, copy.search(vecs[250:251], 1)[0][0]) == ["t250"]
    if not is_shared(store):  # a local store: the original keeps its rows and vectors
        assert _texts(store, store.search(vecs[3:4], 1)[0][0]) == ["t3"]
        return
    # One engine behind both: f0's rows left it, and the copy's new rows are not in the
    # original's table, so its searches never return them (nor an id outside its table).
    ids, _ = store.search(vecs[[3, 250]], 20)
    found = [store.units[i] for i in ids.ravel() if i >= 0]
    assert found and all(u.file != "f0.txt" and int(u.text[1:]) < 200 for u in found)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_faiss_adds_one_at_a_time_and_copies_grow_apart(index_type) -> None:
    units, vecs = _data()
    store = FaissStore(DIM, index_type)
    for i in range(150):  # as `citeqa index` adds: document by document
        store.add(units[i:i + 1], vecs[i:i + 1])
    copy = store.copy()
    store.add(units[150:200], vecs[150:200])  # into the original's spare rows
    copy.add(units[200:260], vecs[200:260])  # the copy's own rows, not the original's
    np.testing.assert_array_equal(store.vectors_for(range(200)), vecs[:200])
    np.testing.assert_array_equal(copy.vectors_for(range(150)), vecs[:150])
    np.testing.assert_array_equal(copy.vectors_for(range(150, 210)), vecs[200:260])
    assert _texts(store, store.search(vecs[170:171], 1)[0][0]) == ["t170"]
    assert _texts(copy, copy.search(vecs[230:231], 1)[0][0]) == ["t230"]
    assert _texts(copy, copy.search(vecs[170:171], 3)[0][0])[0] != "t170"


def test_faiss_add_grows_its_buffer_geometrically() -> None:
    """5,000 single-unit adds reallocate a handful of times, not 5,000 (each reallocation
    copies every vector: quadratic at 1M units before)."""
    rng = np.random.default_rng(1)
    store = FaissStore(DIM)
    row = rng.normal(size=(1, DIM)).astype(np.float32)
    previous, reallocations = None, 0
    for i in range(5000):
        store.add([Unit("f.txt", 1, i, i + 1, "t")], row)
        reallocations += store._buffer is not previous
        previous = store._buffer  # held, so a new buffer can never reuse its address
    assert len(store) == 5000 and reallocations <= 10
    store.remove_file("f.txt")
    assert len(store) == 0 and store.vectors_for([]).shape == (0, DIM)


def test_search_restricted_to_files(backend) -> None:
    units, vecs = _data()
    store = backend.new()
    store.add(units, vecs)
    ids, scores = store.search(vecs[[0, 1]], 5, files={"f2.txt"})
    assert ids.shape[1] == 5 and all(store.units[i].file == "f2.txt" for i in ids.ravel())
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert store.search(vecs[:1], 5, files=set())[0].shape == (1, 0)
    ids, _ = store.search(vecs[[4]], 1, files={"f1.txt", "f0.txt"})
    assert _texts(store, ids[0]) == ["t4"]  # f1.txt: its own vector is the best


def test_save_and_open_round_trip(backend, tmp_path) -> None:
    units, vecs = _data()
    store = backend.new()
    store.add(units, vecs)
    store.remove_file("f2.txt")
    store.save(tmp_path / "s")
    again = backend.open(tmp_path / "s")
    assert list(again.units) == list(store.units)
    np.testing.assert_allclose(again.vectors_for(range(len(again))),
                               store.vectors_for(range(len(store))))
    assert _texts(again, again.search(vecs[9:10], 1)[0][0]) == ["t9"]


def test_add_rejects_mismatched_rows(backend) -> None:
    store = backend.new(4)
    with pytest.raises(ValueError):
        store.add([Unit("a", 1, 0, 1, "a")], np.zeros((2, 4), dtype=np.float32))


def test_the_factory_names_its_choices() -> None:
    assert STORES["faiss"] is FaissStore
    with pytest.raises(InvalidInput, match="unknown store 'nope': choose from .*faiss"):
        new_store("nope", DIM)


def test_a_whole_pipeline_runs_on_the_second_backend(make_qa) -> None:
    """The store setting picks the class; the manifest records it; answers are the same."""
    faiss_qa = make_qa()
    memory_qa = make_qa(store="memory", index_dir=faiss_qa.settings.resolved_index_dir.parent
                        / "memory-index")
    assert isinstance(memory_qa.index.sentences, MemoryStore)
    question = "why was the counter-ISIS campaign paused?"
    a, b = faiss_qa.ask(question), memory_qa.ask(question)
    assert [x.citation for x in a.answers] == [x.citation for x in b.answers]
    assert [p.file for p in a.passages] == [p.file for p in b.passages]
    # Reloaded from disk by the same factory.
    again = make_qa(store="memory", index_dir=memory_qa.settings.resolved_index_dir)
    assert isinstance(again.index.passages, MemoryStore)
    assert again.ask(question).answers[0].citation == b.answers[0].citation


def test_shared_store_replicas_see_one_engine(milvus_options) -> None:
    """Two processes' stores on one Milvus collection: what one writes, the other finds once
    it attaches the units (as a replica does from the catalog); what one removes is gone for
    both; ``stored`` tells a re-run what is already there, with its vectors."""
    units, vecs = _data(60)
    a = new_store("milvus", DIM, "hnsw", role="sentences", options=milvus_options)
    b = new_store("milvus", DIM, "hnsw", role="sentences", options=milvus_options)
    passages = new_store("milvus", DIM, "hnsw", role="passages", options=milvus_options)
    a.add(units[:40], vecs[:40])
    mask, stored = b.stored(units)
    assert mask.tolist() == [True] * 40 + [False] * 20
    np.testing.assert_allclose(stored[:40], vecs[:40], atol=1e-6)
    assert not stored[40:].any()
    assert not passages.stored(units[:5])[0].any()  # the other kind is apart
    assert passages.search(vecs[:1], 5)[0].shape == (1, 0)
    assert b.search(vecs[:1], 5)[0].shape == (1, 0)  # nothing in b's table yet
    b.attach(units[:40])
    assert _texts(b, b.search(vecs[[7]], 1)[0][0]) == ["t7"]
    b.remove_file("f1.txt")
    ids, _ = a.search(vecs[[1, 4]], 10)
    assert all(a.units[i].file != "f1.txt" for i in ids.ravel() if i >= 0)
    a.detach("f1.txt")
    assert len(a) == len(b) == 27 and list(a.units) == list(b.units)


def test_auto_follows_the_corpus_size(monkeypatch, tmp_path) -> None:
    """``auto`` is exact below AUTO_EXACT_BELOW vectors and HNSW from there on; a saved FAISS
    file of another type (the setting changed, or the corpus grew past the line) is rebuilt
    from the vectors, never trusted."""
    import faiss

    from citeqa.index import store as store_module

    monkeypatch.setattr(store_module, "AUTO_EXACT_BELOW", 100)
    units, vecs = _data(150)
    small = new_store("faiss", DIM, "auto")
    small.add(units[:99], vecs[:99])
    small.search(vecs[:1], 1)
    assert isinstance(small._faiss, faiss.IndexFlatIP)
    small.save(tmp_path / "s")
    grown = open_store("faiss", tmp_path / "s", DIM, "auto")
    assert isinstance(grown._faiss, faiss.IndexFlatIP)  # still below the line: kept
    grown.add(units[99:], vecs[99:])
    assert _texts(grown, grown.search(vecs[[120]], 1)[0][0]) == ["t120"]
    assert isinstance(grown._faiss, faiss.IndexHNSWFlat)
    grown.save(tmp_path / "g")
    assert open_store("faiss", tmp_path / "g", DIM, "flat")._faiss is None  # rebuilt as flat


def test_a_faiss_index_opens_with_another_index_type(make_qa) -> None:
    """The FAISS index is derived from the stored vectors: changing the index type needs no
    re-embedding (a Milvus collection's index lives in the engine and is not like that)."""
    built = make_qa(index_type="flat")
    again = make_qa(index_type="hnsw", index_dir=built.settings.resolved_index_dir)
    assert not again.last_report.changed and again.index.config.index_type == "hnsw"
    question = "why was the counter-ISIS campaign paused?"
    assert again.ask(question).answers[0].citation == built.ask(question).answers[0].citation
