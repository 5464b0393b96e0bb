"""Milvus as the shared store (issue 15): replicas that share one Milvus see each other's
uploads and deletions, a new replica or a re-run after an interruption embeds nothing that is
already stored, and two `citeqa serve` processes on different ports serve one corpus.

The Milvus Lite server is started on loopback for the session (tests/conftest.py). The same
tests run against the real Milvus binary in tests/test_engine.py (``make test-engines``)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from pymilvus import (
    AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker,
)

from citeqa.index import build
from citeqa.index.errors import IndexProblem
from tests.conftest import CORPUS, link_model_cache, running_server

BASE = ("The secret base was named Camp Falcon.\n\n"
        "It was built in 2004 by army engineers near the river.\n").encode()
QUESTION = "what was the secret base named?"


def _milvus(options) -> dict:
    return {"store": "milvus", "milvus_uri": options.uri, "milvus_prefix": options.prefix}


class Counting:
    """An embedder that counts the texts it embeds (and can fail on its n-th call)."""

    def __init__(self, inner, fail_on: int = 0) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, []
        self.name, self.dim = inner.name, inner.dim

    def warm_up(self) -> None:
        self.inner.warm_up()

    def encode(self, texts):
        self.calls.append(len(texts))
        if len(self.calls) == self.fail_on:
            raise RuntimeError("interrupted")
        return self.inner.encode(texts)

    def encode_query(self, text):
        return self.inner.encode_query(text)


def test_replicas_share_uploads_and_deletions(make_qa, milvus_options, tmp_path) -> None:
    a = make_qa(index_dir=tmp_path / "a", **_milvus(milvus_options))
    b = make_qa(index_dir=tmp_path / "b", **_milvus(milvus_options))
    assert b.last_report.added == []  # the corpus came from A's catalog: nothing embedded

    a.add_documents([("notes.txt", BASE)])
    answer = b.ask(QUESTION).answers[0]
    assert answer.citation.file == "notes.txt" and "Camp Falcon" in answer.text
    para = b.paragraph("notes.txt", answer.citation.paragraph)
    c = answer.citation
    assert para.text[c.start - para.start:c.end - para.start] == answer.text
    assert {d.file: d.source for d in b.documents()}["notes.txt"] == "upload"

    # Replaced through B: A answers from the new text only.
    b.add_documents([("notes.txt", b"The base was renamed Camp Osprey in 2010.\n")])
    passages = a.search("Camp Falcon", top_k=50).passages
    assert all("Camp Falcon" not in p.text for p in passages)
    assert "Camp Osprey" in a.ask(QUESTION.replace("named", "renamed")).answers[0].text

    b.remove_document("notes.txt")
    assert "notes.txt" not in {d.file for d in a.documents()}
    assert all(p.file != "notes.txt" for p in a.search("Camp Osprey", top_k=50).passages)
    # Local caches agree with the shared store after a restart from them.
    again = make_qa(index_dir=tmp_path / "a", **_milvus(milvus_options))
    assert sorted(again.index.files) == sorted(b.index.files) == sorted(
        p.name for p in CORPUS.iterdir() if p.suffix in {".txt", ".md"})


def test_an_interrupted_index_resumes_without_embedding_again(
        make_qa, embedder, milvus_options, tmp_path, monkeypatch) -> None:
    """Keys are content hashes: a re-run embeds only the documents the engine lacks."""
    monkeypatch.setattr(build, "EMBED_BATCH", 1)  # one document per embedding call
    docs = tmp_path / "docs"
    shutil.copytree(CORPUS, docs)
    first = make_qa(docs, start=False, index_dir=tmp_path / "i1", **_milvus(milvus_options))
    first.embedder = first.retriever.embedder = Counting(embedder, fail_on=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        first.start()
    assert len(first.embedder.calls) == 3

    again = make_qa(docs, start=False, index_dir=tmp_path / "i2", **_milvus(milvus_options))
    again.embedder = again.retriever.embedder = Counting(embedder)
    report = again.start()
    assert len(report.added) == 3
    assert again.embedder.calls == [first.embedder.calls[2]]  # only the third document
    reference = make_qa(docs, index_dir=tmp_path / "faiss")
    assert list(again.index.sentences.units) == list(reference.index.sentences.units)
    question = "why was the counter-ISIS campaign paused?"
    assert ([a.citation for a in again.ask(question).answers]
            == [a.citation for a in reference.ask(question).answers])


def test_unreachable_milvus_is_a_clear_error(make_qa, tmp_path) -> None:
    with pytest.raises(IndexProblem, match="cannot reach Milvus at http://127.0.0.1:1 .*"
                       "CITEQA_MILVUS_URI"):
        make_qa(store="milvus", milvus_uri="http://127.0.0.1:1")


def test_two_served_replicas_share_one_store(milvus_uri, model_cache, tmp_path) -> None:
    """Two `citeqa serve` processes on different ports, each with its own data folder, on
    one Milvus Lite: upload through A, ask and resolve through B; delete through B, gone
    from A."""
    common = {**os.environ, "CITEQA_STORE": "milvus", "CITEQA_MILVUS_URI": milvus_uri,
              "CITEQA_MILVUS_PREFIX": "replicas", "CITEQA_API_KEY": "k"}
    auth = {"Authorization": "Bearer k"}
    envs = [{**common, "CITEQA_DATA_DIR": str(link_model_cache(tmp_path / n, model_cache))}
            for n in ("a", "b")]
    with running_server([], envs[0], tmp_path / "a.log") as (url_a, _), \
            running_server([], envs[1], tmp_path / "b.log") as (url_b, _):
        r = httpx.post(f"{url_a}/documents", headers=auth, files={"file": ("notes.txt", BASE)},
                       timeout=60)
        assert r.status_code == 201, r.text
        body = httpx.post(f"{url_b}/ask", json={"question": QUESTION}, timeout=60).json()
        top = body["answers"][0]
        c = top["citation"]
        assert c["file"] == "notes.txt" and "Camp Falcon" in top["text"]
        para = httpx.get(f"{url_b}/documents/notes.txt/paragraphs/{c['paragraph']}").json()
        assert para["text"][c["start"] - para["start"]:c["end"] - para["start"]] == top["text"]

        assert httpx.delete(f"{url_b}/documents/notes.txt", headers=auth).status_code == 204
        names = {d["file"] for d in httpx.get(f"{url_a}/documents").json()["documents"]}
        assert "notes.txt" not in names and len(names) == 3
        assert httpx.get(f"{url_a}/documents/notes.txt/paragraphs/1").status_code == 404
    # Nothing of the shared state was kept in either data folder's uploads.
    assert not [p for n in ("a", "b") for p in Path(tmp_path, n).rglob("notes.txt")]


def test_bm25_functions_and_hybrid_search_work_on_milvus_lite(milvus_uri) -> None:
    """Milvus Lite 3.2.2 (pymilvus 3.0.2) has the built-in BM25 full-text search (a Function
    from an analysed VARCHAR to a sparse vector, searched with the query's text) and
    ``hybrid_search`` (several ANN requests fused by a ranker). Milvus 2.3.5 has neither
    (tests/test_engine.py)."""
    client = MilvusClient(uri=milvus_uri, timeout=20)
    name = f"t_{uuid.uuid4().hex[:12]}"
    client.create_collection(f"{name}_bm25", schema=bm25_schema(client),
                             index_params=bm25_index(client), consistency_level="Strong")
    assert [f["type"] for f in client.describe_collection(f"{name}_bm25")["functions"]] == [
        FunctionType.BM25]
    client.insert(f"{name}_bm25", [{"id": 1, "text": "The secret base was named Camp Falcon."},
                                   {"id": 2, "text": "The river flows north to the sea."}])
    hits = client.search(f"{name}_bm25", data=["camp falcon"], anns_field="sparse", limit=2,
                         search_params={"metric_type": "BM25"})
    assert [h["id"] for h in hits[0]] == [1]  # only the document with the words

    dense_collection(client, f"{name}_dense")
    hits = client.hybrid_search(f"{name}_dense", hybrid_requests(), RRFRanker(), limit=3)
    assert len(hits[0]) == 3 and {h["id"] for h in hits[0][:2]} == {2, 3}
    for suffix in ("_bm25", "_dense"):
        client.drop_collection(name + suffix)


# -- what the engine supports: built-in BM25 and hybrid search (also in tests/test_engine.py) --

def bm25_schema(client: MilvusClient):
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=1000, enable_analyzer=True)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                 input_field_names=["text"], output_field_names=["sparse"]))
    return schema


def bm25_index(client: MilvusClient):
    params = client.prepare_index_params()
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return params


def dense_collection(client: MilvusClient, name: str) -> None:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
    params = client.prepare_index_params()
    params.add_index("v", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=params,
                             consistency_level="Strong")
    client.insert(name, [{"id": i, "v": [1.0, float(i), 0.5, 0.1]} for i in range(5)])


def hybrid_requests() -> list[AnnSearchRequest]:
    return [AnnSearchRequest(data=[[1.0, q, 0.5, 0.1]], anns_field="v",
                             param={"metric_type": "COSINE"}, limit=3) for q in (2.0, 3.0)]


def test_a_restarted_engine_serves_its_collections(tmp_path) -> None:
    """After Milvus restarts, its collections are released; opening the store loads them."""
    import numpy as np

    from citeqa.index.milvus_store import MilvusCatalog
    from citeqa.index.store import StoreOptions, new_store
    from citeqa.index.units import Unit
    from tests.conftest import milvus_lite

    vecs = np.eye(4, dtype=np.float32)
    units = [Unit("a.txt", 1, i, i + 1, f"t{i}") for i in range(4)]
    with milvus_lite(tmp_path / "data", tmp_path / "1.log") as uri:
        options = StoreOptions(uri=uri, prefix="restart")
        new_store("milvus", 4, "flat", role="sentences", options=options).add(units, vecs)
        MilvusCatalog(options).publish([("a.txt", "text", "0" * 64, "upload", 1)])
    with milvus_lite(tmp_path / "data", tmp_path / "2.log") as uri:
        options = StoreOptions(uri=uri, prefix="restart")
        store = new_store("milvus", 4, "flat", role="sentences", options=options)
        store.attach(units)
        assert store.search(vecs[[2]], 1)[0][0, 0] == 2
        assert MilvusCatalog(options).listing() == {"a.txt": ("0" * 64, "upload", 1)}


def test_save_flushes_what_the_store_wrote_and_only_that(milvus_options, tmp_path) -> None:
    """A save ends a batch of writes: it seals them (flush), so the engine's vector index
    covers them instead of a brute-force scan of the growing segment; a save with nothing
    new written does not flush again. Searches find the rows before and after."""
    import numpy as np

    from citeqa.index.milvus_store import MilvusStore
    from citeqa.index.units import Unit

    store = MilvusStore(8, "hnsw", role="passages", options=milvus_options)
    flushed: list[str] = []
    real_flush = store._client.flush
    store._client.flush = lambda name, **kw: (flushed.append(name), real_flush(name, **kw))[1]
    try:
        units = [Unit("a.txt", i + 1, 10 * i, 10 * i + 2, f"t{i}") for i in range(20)]
        vectors = np.random.default_rng(3).normal(size=(20, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add(units, vectors)
        assert store.search(vectors[:1], 1)[0][0, 0] == 0  # readable before the flush
        store.save(tmp_path / "cache")
        assert flushed == [store.collection]
        store.save(tmp_path / "cache")  # nothing written since: no second flush
        assert flushed == [store.collection]
        ids, _ = store.search(vectors[5:6], 1)
        assert ids[0, 0] == 5
        store.remove_file("a.txt")  # a delete is a write too
        store.save(tmp_path / "cache")
        assert flushed == [store.collection] * 2
        assert len(store) == 0 and store.search(vectors[:1], 1)[0].shape == (1, 0)
    finally:
        del store._client.flush
