"""The store contract (``citeqa.index.store.Store``), run against every backend: FAISS in each
index type, and the in-memory numpy store of tests/memory_store.py. A backend that passes this
suite can be chosen by the ``store`` setting; the last test runs a whole QA on the second one."""

from __future__ import annotations

import numpy as np
import pytest

from citeqa.index.errors import InvalidInput
from citeqa.index.store import STORES, FaissStore, new_store, open_store, register_store
from citeqa.index.units import Unit

from .memory_store import MemoryStore

register_store("memory", MemoryStore)

BACKENDS = [("faiss", "flat"), ("faiss", "hnsw"), ("faiss", "ivf"), ("memory", "flat")]
DIM = 8


@pytest.fixture(params=BACKENDS, ids=[f"{s}-{t}" for s, t in BACKENDS])
def backend(request) -> tuple[str, str]:
    return request.param


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
    store = new_store(backend[0], DIM, backend[1])
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
    store = new_store(backend[0], DIM, backend[1])
    ids, scores = store.search(vecs[:1], 3)
    assert ids.shape == (1, 0) and scores.shape == (1, 0)
    store.add(units, vecs)
    ids, _ = store.search(vecs[:2], 10)
    assert ids.shape == (2, 4) and sorted(ids[0].tolist()) == [0, 1, 2, 3]


def test_remove_file_keeps_ids_dense_and_search_right(backend) -> None:
    units, vecs = _data()
    store = new_store(backend[0], DIM, backend[1])
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


def test_copy_is_independent(backend) -> None:
    units, vecs = _data()
    store = new_store(backend[0], DIM, backend[1])
    store.add(units[:200], vecs[:200])
    copy = store.copy()
    copy.remove_file("f0.txt")
    copy.add(units[200:], vecs[200:])
    assert len(store) == 200 and list(store.units) == units[:200]
    assert _texts(store, store.search(vecs[3:4], 1)[0][0]) == ["t3"]  # f0: still in the original
    assert _texts(copy, copy.search(vecs[250:251], 1)[0][0]) == ["t250"]


def test_save_and_open_round_trip(backend, tmp_path) -> None:
    units, vecs = _data()
    store = new_store(backend[0], DIM, backend[1])
    store.add(units, vecs)
    store.remove_file("f2.txt")
    store.save(tmp_path / "s")
    again = open_store(backend[0], tmp_path / "s", DIM, backend[1])
    assert list(again.units) == list(store.units)
    np.testing.assert_allclose(again.vectors_for(range(len(again))),
                               store.vectors_for(range(len(store))))
    assert _texts(again, again.search(vecs[9:10], 1)[0][0]) == ["t9"]


def test_add_rejects_mismatched_rows(backend) -> None:
    store = new_store(backend[0], 4, backend[1])
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
