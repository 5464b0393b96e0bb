"""Schema-driven fuzzing of the HTTP API against its own OpenAPI schema (schemathesis), in
process through the ASGI app, plus a hypothesis pass over the upload endpoint's file names and
contents. Bounded and derandomized: the same examples every run."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from citeqa.index.documents import DocumentError, validate_name
from citeqa.service.api.app import create_app
from citeqa.service.settings import Settings
from tests.conftest import copy_index

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 40
UPLOADED = "fuzz-notes.txt"


@pytest.fixture
def fuzz_qa(make_qa, bundled_index, tmp_path):
    """A writable QA over the bundled corpus (its prebuilt index copied in: no re-embedding),
    with one uploaded file, so reads and deletes of a real upload are fuzzed too."""
    qa = make_qa(api_key=KEY, index_dir=copy_index(bundled_index, tmp_path / "index"))
    qa.add_documents([(UPLOADED, b"The fuzz harbour was rebuilt in 1901.\n\nIt flooded in 1953.")])
    return qa


# Every operation of the schema, one test each (read from the app's schema, so a new route is
# fuzzed without editing this file). Not schemathesis.pytest.from_fixture: its lazy loader
# fails under pytest 9 ("'Function' object has no attribute '_nodeid'", schemathesis 4.32).
OPERATIONS = [(method.upper(), path)
              for path, ops in create_app(settings=Settings()).openapi()["paths"].items()
              for method in ops]


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_conforms_to_its_schema(fuzz_qa, method: str, path: str) -> None:
    """Valid and invalid requests (schemathesis' positive and negative modes): no 5xx, and every
    response (status code, content type, body) is one the schema declares. Writes carry the
    key, so uploads and deletes are exercised, not just refused; operations on ``{file}`` also
    get the names of real documents (an upload, a read-only source file)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(qa=fuzz_qa))
    operation = schema[path][method]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE),
                  operation.as_strategy(GenerationMode.NEGATIVE)]
    if "{file}" in path:
        names = [UPLOADED, fuzz_qa.documents()[0].file]
        strategies.append(st.sampled_from(names).flatmap(
            lambda name: operation.as_strategy(GenerationMode.POSITIVE,
                                               path_parameters={"file": name})))
    if (method, path) == ("POST", "/documents"):
        # Schemathesis' file contents are binary samples (PNG, ZIP, random bytes) that no text
        # decoder takes: add text files, so uploads are indexed too, not only refused.
        strategies.append(st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=3)
                          .flatmap(lambda texts: operation.as_strategy(
                              GenerationMode.POSITIVE,
                              body={"file": [t.encode("utf-8", "surrogatepass") for t in texts]})))
    statuses: list[int] = []

    @given(case=st.one_of(strategies))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        statuses.append(case.call_and_validate(headers=AUTH, checks=CHECKS).status_code)

    fuzz()
    # Not only refusals: each operation answered successfully at least once.
    assert any(200 <= s < 300 for s in statuses), (method, path, sorted(set(statuses)))


# -- the upload endpoint's file names and contents ------------------------------------------------

GOOD = b"The harbour was rebuilt in 1901 after the storm.\n\nIt flooded in 1953."


# Characters a multipart header cannot carry as they are (a client escapes or mangles them), and
# surrogates (no UTF-8): for names with these, the server sees another name than was sent.
_MANGLED = set('"\\\r\n')
_SUFFIXES = [".txt", ".md", ".markdown", ".text", ".TXT", ".pdf", ""]
NAMES = st.one_of(
    st.text(max_size=40),                                                     # anything at all
    st.tuples(st.text(min_size=1, max_size=40), st.sampled_from(_SUFFIXES)).map("".join),
    st.tuples(st.text(st.characters(codec="utf-8"), min_size=230, max_size=300),
              st.sampled_from(_SUFFIXES)).map("".join),                      # near 255 bytes
    st.sampled_from(["notes.txt", "CON.txt", "../up.txt", ".hidden.md", "a\x00b.txt",
                     "x" * 251 + ".txt", "é" * 126 + ".txt", "cafe\u0301.md", " pad.txt"]),
)
CONTENTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.just(GOOD),
)


def _multipart(name: str, data: bytes) -> tuple[bytes, dict]:
    """The file name's bytes as a hostile client sends them (httpx would escape some)."""
    raw = name.encode("utf-8", "surrogatepass")
    body = (b'--f0zz\r\nContent-Disposition: form-data; name="file"; filename="' + raw
            + b'"\r\nContent-Type: text/plain\r\n\r\n' + data + b"\r\n--f0zz--\r\n")
    return body, {**AUTH, "content-type": "multipart/form-data; boundary=f0zz"}


def _valid(name: str) -> str | None:
    try:
        return validate_name(name)
    except DocumentError:
        return None


def test_upload_names_and_contents(fuzz_qa) -> None:
    """Any name, any bytes: never a 5xx, every 4xx a JSON ``error``; the document list changes
    only by files whose names validate (each listed name is its own canonical form), a refused
    upload changes nothing, and a name the server sees as sent is accepted only if it
    validates, under its canonical (NFC) form."""
    with TestClient(create_app(qa=fuzz_qa), raise_server_exceptions=False) as client:

        def listed() -> dict[str, str]:
            return {d["file"]: d["sha256"] for d in client.get("/documents").json()["documents"]}

        outcomes: list[int] = []

        @given(name=NAMES, data=CONTENTS)
        # Valid names of exactly 255 bytes in UTF-8: their temporary file's name was too long
        # for the file system (500) before.
        @example(name="x" * 251 + ".txt", data=GOOD)
        @example(name="é" * 126 + ".md", data=GOOD)
        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def upload(name: str, data: bytes) -> None:
            before = listed()
            body, headers = _multipart(name, data)
            r = client.post("/documents", content=body, headers=headers)
            outcomes.append(r.status_code)
            assert r.status_code < 500, (name, r.status_code, r.text)
            after = listed()
            assert all(_valid(f) == f for f in after), sorted(set(after) - set(before))
            sent_as_is = not (_MANGLED & set(name)) and not any(
                "\ud800" <= ch <= "\udfff" for ch in name)
            if sent_as_is and _valid(name) and data == GOOD:
                assert r.status_code == 201, (name, r.text)  # a good file under a good name
            if r.status_code != 201:
                assert 400 <= r.status_code < 500 and isinstance(r.json()["error"], str), r.text
                assert r.json()["error"], r.text
                assert after == before, (name, r.status_code)
                return
            returned = [d["file"] for d in r.json()["documents"]]
            changed = {f for f in after if before.get(f) != after[f]}
            assert changed <= set(returned) and set(before) <= set(after), (name, changed)
            if sent_as_is:
                assert returned == [_valid(name)], (name, returned)

        upload()
        assert 201 in outcomes and any(400 <= s < 500 for s in outcomes), sorted(set(outcomes))
