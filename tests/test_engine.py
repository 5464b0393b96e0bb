"""The engine suite (``pytest -m engine``, ``make test-engines``; not in ``make test``): the
store contract, a whole QA and two replicas against the real Milvus binary, PyPI
``milvus==2.3.5`` (Milvus 2.3.5 standalone with embedded etcd and RocksMQ; it reports itself
as "v2.3.5-lite"), started for the session in a network namespace whose only interface is
loopback (tests/conftest.py, ``milvus_engine``). Milvus Lite 3.x, which ``make test`` uses, is a
re-implementation: this is the check that the real engine behaves the same.

The store tests and the replica tests are tests/test_store.py's and tests/test_milvus.py's own
functions, collected here a second time with ``backend`` and ``milvus_options`` pointing at the
engine."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from pymilvus import DataType, MilvusClient, MilvusException, RRFRanker

from citeqa.index.store import StoreOptions
from tests import test_store
from tests.test_milvus import (  # noqa: F401 - the tests are collected here, on the engine
    _milvus, bm25_index, bm25_schema, dense_collection, hybrid_requests,
    test_an_interrupted_index_resumes_without_embedding_again,
    test_replicas_share_uploads_and_deletions,
)
from tests.test_store import (  # noqa: F401 - collected here, on the engine
    test_a_copy_has_its_own_unit_table, test_add_rejects_mismatched_rows,
    test_k_larger_than_the_store_and_empty_stores,
    test_remove_file_keeps_ids_dense_and_search_right, test_save_and_open_round_trip,
    test_search_finds_each_unit_by_its_own_vector, test_search_restricted_to_files,
    test_shared_store_replicas_see_one_engine,
)

pytestmark = pytest.mark.engine

ENGINE_BACKENDS = [b for b in test_store.BACKENDS if b[0] == "milvus"]
ENGINE_VERSION = "v2.3.5-lite"  # what the PyPI package's binary reports


@pytest.fixture
def milvus_options(milvus_engine_uri) -> StoreOptions:
    """This test's own collections on the session's engine (replaces conftest's Lite one)."""
    return StoreOptions(uri=milvus_engine_uri, prefix=f"e_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=ENGINE_BACKENDS, ids=[f"{s}-{t}" for s, t in ENGINE_BACKENDS])
def backend(request, milvus_options) -> test_store.Backend:
    name, index_type = request.param
    return test_store.Backend(name, index_type, milvus_options)


def test_the_engine_is_milvus_2_3_5_on_loopback_only(milvus_engine) -> None:
    """Its sockets are in a network namespace of its own whose only interface is loopback
    (there it listens on *:PORT); in ours, none of its sockets listens, and the two ports that
    lead to it listen on 127.0.0.1 only."""
    pid = milvus_engine.pid
    assert os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "milvus"
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    with open(f"/proc/{pid}/net/dev", encoding="ascii") as f:
        interfaces = {line.split(":")[0].strip() for line in f.readlines()[2:]}
    assert interfaces == {"lo"}
    theirs = {inode for _, _, inode in _listeners(f"/proc/{pid}/net")}
    sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert {f"socket:[{inode}]" for inode in theirs} <= sockets  # the namespace's are its own
    ours = _listeners("/proc/self/net")
    assert not {f"socket:[{inode}]" for _, _, inode in ours} & sockets
    for port in milvus_engine.ports.local.values():
        assert [address for address, p, _ in ours if p == port] == ["127.0.0.1"]
    client = MilvusClient(uri=milvus_engine.uri, timeout=10)
    assert client.get_server_version() == ENGINE_VERSION


def _listeners(net: str) -> list[tuple[str, int, str]]:
    """(address, port, socket inode) of the listening TCP sockets in a /proc/.../net folder."""
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"{net}/{table}", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] != "0A":  # LISTEN
                    continue
                if len(address) == 8:  # IPv4, little-endian
                    address = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
                found.append((address, int(port, 16), fields[9]))
    return found


QUESTIONS = [
    "why was the counter-ISIS campaign paused?",
    "what did Esper say about the impact on operations in Syria?",
    "who is the chairman of the Joint Chiefs of Staff?",
    "when did U.S. troops withdraw from Iraq before the Islamic State emerged?",
]


def test_a_whole_qa_on_the_engine_answers_as_faiss(make_qa, milvus_options, tmp_path) -> None:
    """The bundled corpus indexed into the engine: the same answers, with the same citations
    and passages, as the FAISS default; and again from the local cache, embedding nothing."""
    faiss_qa = make_qa(index_dir=tmp_path / "faiss")
    engine_qa = make_qa(index_dir=tmp_path / "engine", **_milvus(milvus_options))
    again = make_qa(index_dir=tmp_path / "engine", **_milvus(milvus_options))
    assert again.last_report.added == []
    for question in QUESTIONS:
        a, b = faiss_qa.ask(question), engine_qa.ask(question)
        assert a.answers and not a.no_answer, question
        assert [(x.text, x.citation) for x in b.answers] == [(x.text, x.citation)
                                                             for x in a.answers], question
        assert [(p.file, p.paragraph) for p in b.passages] == [(p.file, p.paragraph)
                                                               for p in a.passages], question
        assert [x.citation for x in again.ask(question).answers] == [x.citation
                                                                     for x in a.answers]
        c = b.answers[0].citation
        para = engine_qa.paragraph(c.file, c.paragraph)
        assert para.text[c.start - para.start:c.end - para.start] == b.answers[0].text


def test_bm25_functions_and_hybrid_search_are_not_in_milvus_2_3_5(milvus_engine_uri) -> None:
    """Milvus' built-in BM25 (a Function over an analysed VARCHAR into a sparse vector) and
    ``hybrid_search`` came after 2.3: sparse vectors and hybrid search in 2.4, BM25 functions in
    2.5. What 2.3.5 does with them, as observed (pymilvus 3.0.2): it accepts the schema but drops
    the function, cannot index the sparse field, and has no HybridSearch method."""
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    client = MilvusClient(uri=milvus_engine_uri, timeout=20)
    name = f"e_{uuid.uuid4().hex[:12]}"
    client.create_collection(f"{name}_bm25", schema=bm25_schema(client))
    described = client.describe_collection(f"{name}_bm25")
    assert described["functions"] == []  # silently dropped
    assert {f["name"]: f["type"] for f in described["fields"]}["sparse"] == (
        DataType.SPARSE_FLOAT_VECTOR)
    with pytest.raises(MilvusException, match="create index on 104 field is not supported"):
        client.create_index(f"{name}_bm25", bm25_index(client))
    with pytest.raises(Exception, match="missed an field `sparse`"):  # no function fills it
        client.insert(f"{name}_bm25", [{"id": 1, "text": "camp falcon"}])

    dense_collection(client, f"{name}_dense")
    with pytest.raises(Exception, match="unknown method HybridSearch"):  # gRPC UNIMPLEMENTED
        client.hybrid_search(f"{name}_dense", hybrid_requests(), RRFRanker(), limit=3)
    for suffix in ("_bm25", "_dense"):
        client.drop_collection(name + suffix)
