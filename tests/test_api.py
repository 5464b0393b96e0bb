"""Every HTTP endpoint, including the errors, through FastAPI's TestClient: the contract, run
on every store backend (FAISS, the in-memory store, Milvus Lite)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from citeqa.service.api.app import create_app

from .conftest import STORE_BACKENDS, store_settings

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(params=STORE_BACKENDS)
def store(request) -> str:
    return request.param


@pytest.fixture
def client(make_qa, store, request):
    backend = store_settings(store, request)

    def factory(**overrides):
        qa = make_qa(**backend, **overrides)
        return TestClient(create_app(qa=qa))
    return factory


@pytest.fixture
def ro(store_qa, store):
    with TestClient(create_app(qa=store_qa(store))) as c:
        yield c


def test_health_ready_and_docs(ro) -> None:
    assert ro.get("/health").json() == {"status": "ok"}
    ready = ro.get("/ready").json()
    assert ready["ready"] is True and ready["documents"] == 3 and ready["sentences"] > 100
    assert ro.get("/docs").status_code == 200
    paths = ro.get("/openapi.json").json()["paths"]
    assert {"/ask", "/search", "/documents", "/documents/{file}",
            "/documents/{file}/paragraphs/{number}"} <= set(paths)


def test_ask_returns_cited_verbatim_answers(ro) -> None:
    body = ro.post("/ask", json={"question": "what did Esper say about the impact on operations in Syria?",
                                 "top_k": 3}).json()
    assert body["no_answer"] is False and body["answers"]
    assert len(body["passages"]) <= 3
    assert set(body["timings_ms"]) >= {"retrieve", "rerank", "extract", "total"}
    top = body["answers"][0]
    c = top["citation"]
    assert c["file"] == "000_75612bb2e23990a7.txt" and c["paragraph"] == 14
    para = ro.get(f"/documents/{c['file']}/paragraphs/{c['paragraph']}").json()
    assert para["text"][c["start"] - para["start"]:c["end"] - para["start"]] == top["text"]
    assert "material impact" in top["text"]
    scores = [a["score"] for a in body["answers"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_offtopic_question_abstains(ro) -> None:
    body = ro.post("/ask", json={"question": "what is the tallest mountain in Europe?"}).json()
    assert body["no_answer"] is True and body["answers"] == []


def test_search_returns_passages_only(ro) -> None:
    body = ro.post("/search", json={"question": "Kurdish partners abandoned", "top_k": 4}).json()
    assert "answers" not in body and 1 <= len(body["passages"]) <= 4
    p = body["passages"][0]
    assert {"file", "paragraph", "start", "end", "text", "score"} <= set(p)


@pytest.mark.parametrize("payload, fragment", [
    ({"question": ""}, "question"),
    ({"question": "   \n\t"}, "empty or whitespace"),
    ({"question": "x" * 1001}, "1000"),
    ({"question": "ok?", "top_k": 0}, "top_k"),
    ({"question": "ok?", "top_k": 51}, "top_k"),
    ({"question": "ok?", "top_k": "five"}, "top_k"),
    ({"question": 42}, "question"),
    ({}, "question"),
    ([1, 2], "dictionary"),
    ({"question": "ok?", "unknown": 1}, "unknown"),
])
@pytest.mark.parametrize("path", ["/ask", "/search"])
def test_bad_requests_are_422_with_a_message(ro, path, payload, fragment) -> None:
    r = ro.post(path, json=payload)
    assert r.status_code == 422
    assert fragment.lower() in r.json()["error"].lower()


def test_malformed_json_and_wrong_content_type(ro) -> None:
    r = ro.post("/ask", content=b'{"question": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.json()["error"].lower()
    r = ro.post("/ask", content=b"question=hi", headers={"content-type": "text/plain"})
    assert r.status_code == 422


def test_documents_and_citation_lookup(ro) -> None:
    docs = ro.get("/documents").json()["documents"]
    by_name = {d["file"]: d for d in docs}
    assert by_name["002_dd898a8205fc9529.txt"]["paragraphs"] == 43
    assert len(by_name["000_75612bb2e23990a7.txt"]["sha256"]) == 64
    p = ro.get("/documents/000_75612bb2e23990a7.txt/paragraphs/6").json()
    assert p["text"] == "RELATED" and p["retrievable"] is False
    assert ro.get("/documents/nope.txt/paragraphs/1").status_code == 404
    r = ro.get("/documents/000_75612bb2e23990a7.txt/paragraphs/26")
    assert r.status_code == 404 and "1..25" in r.json()["error"]
    assert ro.get("/documents/000_75612bb2e23990a7.txt/paragraphs/abc").status_code == 422


def test_writes_are_refused_without_a_configured_key(ro) -> None:
    r = ro.post("/documents", files={"file": ("a.txt", b"Some text here.")})
    assert r.status_code == 403 and "CITEQA_API_KEY" in r.json()["error"]
    assert ro.delete("/documents/000_75612bb2e23990a7.txt").status_code == 403


def test_upload_replace_delete_and_restart(client, tmp_path) -> None:
    with client(api_key=KEY) as c:
        r = c.post("/documents", files={"file": ("notes.txt", b"Nothing.")})
        assert r.status_code == 401
        r = c.post("/documents", files={"file": ("notes.txt", b"x")}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401

        text = ("The secret base was named Camp Falcon.\n\n"
                "It was built in 2004 by army engineers near the river.\n").encode()
        r = c.post("/documents", headers=AUTH, files=[
            ("file", ("notes.txt", text)), ("file", ("more.md", b"# Title\n\nThe cake was baked on a Tuesday.\n"))])
        assert r.status_code == 201, r.text
        got = {d["file"]: d for d in r.json()["documents"]}
        assert got["notes.txt"]["paragraphs"] == 2 and got["notes.txt"]["source"] == "upload"
        body = c.post("/ask", json={"question": "what was the secret base named?"}).json()
        assert body["answers"][0]["citation"]["file"] == "notes.txt"
        assert "Camp Falcon" in body["answers"][0]["text"]

        # Replacing keeps one copy and indexes the new content only.
        r = c.post("/documents", headers=AUTH, files={"file": ("notes.txt", b"The base was renamed Camp Osprey in 2010.\n")})
        assert r.status_code == 201 and r.json()["documents"][0]["paragraphs"] == 1
        body = c.post("/search", json={"question": "Camp Falcon", "top_k": 50}).json()
        assert all("Camp Falcon" not in p["text"] for p in body["passages"])

    # Uploads survive a restart (a new app over the same data and index folders).
    with client(api_key=KEY) as c:
        names = {d["file"] for d in c.get("/documents").json()["documents"]}
        assert {"notes.txt", "more.md"} <= names
        assert c.delete("/documents/notes.txt", headers=AUTH).status_code == 204
        assert c.delete("/documents/notes.txt", headers=AUTH).status_code == 404
        r = c.delete("/documents/000_75612bb2e23990a7.txt", headers=AUTH)
        assert r.status_code == 409 and "read-only" in r.json()["error"]
        names = {d["file"] for d in c.get("/documents").json()["documents"]}
        assert "notes.txt" not in names and "000_75612bb2e23990a7.txt" in names


def test_bad_uploads_change_nothing(client) -> None:
    with client(api_key=KEY) as c:
        before = c.get("/documents").json()
        bad = [
            [("file", ("latin.txt", "café".encode("latin-1")))],
            [("file", ("ok.txt", b"Fine text.")), ("file", ("bin.txt", b"\x00\x01\x02"))],
            [("file", ("../escape.txt", b"Fine text."))],
            [("file", ("image.png", b"\x89PNG"))],
            [("file", ("empty.txt", b"   "))],
            [("file", ("a.txt", b"One.")), ("file", ("a.txt", b"Two."))],
        ]
        for files in bad:
            r = c.post("/documents", headers=AUTH, files=files)
            assert r.status_code == 422, (files, r.text)
            assert r.json()["error"]
        r = c.post("/documents", headers=AUTH, data={"other": "x"}, files={"nofile": ("x.txt", b"x")})
        assert r.status_code == 422 and "file" in r.json()["error"]
        r = c.post("/documents", headers={**AUTH, "content-type": "application/json"}, content=b"{}")
        assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
        assert c.get("/documents").json() == before
