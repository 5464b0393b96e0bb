"""Hostile input to the HTTP API: every name is checked before it touches the file system, every
body is bounded before it is read, and nothing gets a 5xx or loses what is indexed."""

from __future__ import annotations

import unicodedata

import pytest
from fastapi.testclient import TestClient

from citeqa.index.documents import DocumentError, validate_name
from citeqa.service.api.app import create_app

KEY = "k3y"
AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = b"The harbour was rebuilt in 1901 after the storm."


@pytest.fixture
def api(make_qa):
    """A writable server with small limits, and the document list to compare against."""
    qa = make_qa(api_key=KEY, max_json_bytes=2048, max_upload_bytes=8192,
                 max_upload_file_bytes=3000, max_upload_files=3)
    with TestClient(create_app(qa=qa), raise_server_exceptions=False) as client:
        yield client


def _documents(c) -> list:
    return c.get("/documents").json()["documents"]


@pytest.mark.parametrize("name, reason", [
    ("a\x00b.txt", "control"),                      # NUL: answered 500 before
    ("x" * 300 + ".txt", "255 bytes"),              # too long: answered 500 before
    ("é" * 126 + ".txt", "255 bytes"),              # 256 bytes in UTF-8, 130 characters
    ("line\nbreak.txt", "control"),
    ("evil\u202etxt.md", "format"),                 # right-to-left override
    ("\ud800.txt", "surrogate"),
    ("../up.txt", "without folders"),
    ("a/b.txt", "without folders"),
    ("a\\b.txt", "without folders"),
    ("..", "without folders"),
    (".hidden.txt", "hidden"),
    (" padded.txt", "spaces"),
    ("CON.txt", "reserved"),
    ("lpt1.md", "reserved"),
    ("notes.pdf", "unsupported"),
    ("", "needs a file name"),
])
def test_bad_names_are_refused_before_the_file_system(name: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        validate_name(name)


def test_names_are_canonical_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "café.txt")
    assert nfd != "café.txt" and validate_name(nfd) == "café.txt"
    assert validate_name("x" * 251 + ".txt") == "x" * 251 + ".txt"  # 255 bytes: allowed


def _raw_upload(name: bytes, data: bytes) -> tuple[bytes, dict]:
    """A multipart body with the file name's bytes as a hostile client sends them (httpx would
    percent-encode a NUL)."""
    boundary = b"h0stile"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + name + b'"\r\nContent-Type: text/plain\r\n\r\n' + data + b"\r\n--" + boundary
            + b"--\r\n")
    return body, {**AUTH, "content-type": "multipart/form-data; boundary=h0stile"}


def test_hostile_upload_names_get_4xx_and_change_nothing(api) -> None:
    before = _documents(api)
    names = ["a\x00b.txt", "x" * 300 + ".txt", "CON.txt", "../../etc/passwd.txt",
             "evil\u202etxt.md", "tab\there.txt"]
    for name in names:
        body, headers = _raw_upload(name.encode("utf-8"), GOOD)
        r = api.post("/documents", content=body, headers=headers)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.json()["error"] and "Traceback" not in r.text
        assert "/work/" not in r.text and "/tmp/" not in r.text  # no server paths
    assert api.delete("/documents/CON.txt", headers=AUTH).status_code == 422
    assert _documents(api) == before


def test_names_that_normalise_alike_are_one_file(api) -> None:
    nfd, nfc = unicodedata.normalize("NFD", "café.txt"), "café.txt"
    r = api.post("/documents", headers=AUTH, files=[("file", (nfd, GOOD))])
    assert r.status_code == 201 and r.json()["documents"][0]["file"] == nfc
    r = api.post("/documents", headers=AUTH,
                 files=[("file", (nfc, b"The harbour was rebuilt in 1902."))])
    assert r.status_code == 201
    assert [d["file"] for d in _documents(api)].count(nfc) == 1
    assert api.get(f"/documents/{nfd}/paragraphs/1").json()["text"].endswith("1902.")
    assert api.delete(f"/documents/{nfd}", headers=AUTH).status_code == 204
    assert nfc not in {d["file"] for d in _documents(api)}


def test_bodies_over_their_limits_are_413_before_being_read(api) -> None:
    before = _documents(api)
    big = {"question": "x" * 4000}
    r = api.post("/ask", json=big)
    assert r.status_code == 413 and "2 KiB" in r.json()["error"]
    assert "CITEQA_MAX_JSON_BYTES" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b" " * 1000

    r = api.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "CITEQA_MAX_JSON_BYTES" in r.json()["error"]

    r = api.post("/documents", headers=AUTH, files=[("file", ("big.txt", b"word " * 2000))])
    assert r.status_code == 413 and "CITEQA_MAX_UPLOAD_BYTES" in r.json()["error"]
    r = api.post("/documents", headers=AUTH, files=[("file", ("big.txt", b"word " * 700))])
    assert r.status_code == 413 and "CITEQA_MAX_UPLOAD_FILE_BYTES" in r.json()["error"]
    r = api.post("/documents", headers=AUTH,
                 files=[("file", (f"f{i}.txt", GOOD)) for i in range(5)])
    assert r.status_code == 413 and "at most 3 files" in r.json()["error"]
    assert _documents(api) == before


def test_malformed_requests_are_4xx_with_a_json_message(api) -> None:
    cases = [
        ("/ask", b'{"question": "hi", "top_k": 1e309}', "application/json"),
        ("/ask", b'{"question": "\\ud800 what?"}', "application/json"),
        ("/ask", b'{"question": "caf\xe9?"}', "application/json"),       # invalid UTF-8
        ("/ask", b"[" * 1500 + b"]" * 1500, "application/json"),          # deeply nested
        ("/ask", b'{"question": ', "application/json"),                    # truncated
        ("/ask", b"question=hi", "text/plain"),
        ("/search", b'{"question": "ok", "top_k": "many"}', "application/json"),
    ]
    for path, body, ctype in cases:
        r = api.post(path, content=body, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text)
        assert r.json()["error"], body[:40]
    r = api.post("/documents", headers={**AUTH, "content-type": "text/plain"}, content=b"x")
    assert r.status_code == 415
    boundary = "b0undary"
    truncated = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"t.txt\"\r\nContent-Type: text/plain\r\n\r\nSome text").encode()
    r = api.post("/documents", content=truncated,
                 headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"})
    # The parser stops at the cut: no complete file part, so nothing to index.
    assert r.status_code == 422 and "'file' parts" in r.json()["error"]


# -- who may read and write, and from where ------------------------------------------------------


def test_reads_can_be_put_behind_the_key(make_qa) -> None:
    qa = make_qa(api_key=KEY, protect_reads=True)
    with TestClient(create_app(qa=qa)) as c:
        question = {"question": "who replaced Soleimani?"}
        for method, path, body in [("POST", "/ask", question), ("POST", "/search", question),
                                   ("GET", "/documents", None),
                                   ("GET", "/documents/000_75612bb2e23990a7.txt/paragraphs/1",
                                    None)]:
            r = c.request(method, path, json=body)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            r = c.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401, path
            assert c.request(method, path, json=body, headers=AUTH).status_code == 200, path
        # Liveness, readiness and the page itself stay open (the page asks for the key).
        for path in ("/health", "/ready", "/"):
            assert c.get(path).status_code == 200, path
    # Reads are open by default.
    with TestClient(create_app(qa=make_qa(api_key=KEY))) as c:
        assert c.post("/ask", json={"question": "who replaced Soleimani?"}).status_code == 200


def test_protecting_reads_without_a_key_is_a_settings_error() -> None:
    from citeqa import QA, InvalidInput

    with pytest.raises(InvalidInput, match="protect_reads needs api_key"):
        QA(protect_reads=True)


def test_cors_is_closed_by_default_and_opens_to_named_origins(make_qa) -> None:
    question = {"question": "who replaced Soleimani?"}
    with TestClient(create_app(qa=make_qa())) as c:
        r = c.post("/ask", json=question, headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in r.headers
    qa = make_qa(cors_origins=["https://app.example"])
    with TestClient(create_app(qa=qa)) as c:
        ok = c.options("/ask", headers={"Origin": "https://app.example",
                                        "Access-Control-Request-Method": "POST"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = c.post("/ask", json=question, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_trusted_hosts(make_qa) -> None:
    qa = make_qa(trusted_hosts=["qa.example.org"])
    with TestClient(create_app(qa=qa), base_url="http://qa.example.org") as c:
        assert c.get("/health").status_code == 200
    with TestClient(create_app(qa=qa), base_url="http://attacker.example") as c:
        assert c.get("/health").status_code == 400


def test_errors_never_show_stack_traces_or_server_paths(make_qa, monkeypatch) -> None:
    qa = make_qa(api_key=KEY)

    def boom(*args, **kwargs):
        raise RuntimeError(f"secret detail at {qa.settings.resolved_index_dir}/x.py")

    monkeypatch.setattr(qa, "ask", boom)
    with TestClient(create_app(qa=qa), raise_server_exceptions=False) as c:
        r = c.post("/ask", json={"question": "anything?"})
        assert r.status_code == 500 and r.json() == {"error": "internal error; see the server log"}
        assert str(qa.settings.resolved_index_dir) not in r.text and "Traceback" not in r.text
        r = c.get("/documents/nothing.txt/paragraphs/1")
        assert r.status_code == 404 and str(qa.settings.docs_dir) not in r.text
        r = c.delete("/documents/000_75612bb2e23990a7.txt", headers=AUTH)  # a source file
        assert r.status_code == 409 and "$CITEQA_DOCS_DIR" in r.json()["error"]
        assert str(qa.settings.docs_dir) not in r.text
