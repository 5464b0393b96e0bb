"""`citeqa serve` as a real process on 127.0.0.1, and `citeqa eval --url` against it."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from citeqa.eval.app import EvalOptions, run_eval
from citeqa.eval.dataset import DatasetError
from tests.conftest import link_model_cache, running_server

DOC = ("Tiny Town was founded in 1820 by river traders.\n\n"
       "The old bridge is made of red stone and spans the Tiny River.\n\n"
       "The town council meets every Tuesday in the library.\n")
QUESTIONS = [
    {"id": "a", "question": "What is the old bridge made of?", "answerable": True,
     "answers": ["red stone"], "type": "factoid",
     "evidence": [{"file": "town.txt", "quote": "The old bridge is made of red stone"}]},
    {"id": "b", "question": "When does the town council meet?", "answerable": True,
     "answers": ["every Tuesday"], "type": "factoid",
     "evidence": [{"file": "town.txt", "quote": "The town council meets every Tuesday in the library."}]},
    {"id": "c", "question": "What is the tallest mountain in Europe?", "answerable": False,
     "answers": [], "evidence": [], "type": "offtopic"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_cache):
    base = tmp_path_factory.mktemp("live")
    docs = base / "docs"
    docs.mkdir()
    (docs / "town.txt").write_text(DOC, encoding="utf-8")
    data = link_model_cache(base / "data", model_cache)
    env = {**os.environ, "CITEQA_DATA_DIR": str(data), "CITEQA_API_KEY": "k"}
    with running_server(["--docs", str(docs)], env, base / "server.log") as (url, _):
        yield url, docs, base


def test_served_api_answers_and_rejects_bad_input(server) -> None:
    url, _, _ = server
    r = httpx.post(f"{url}/ask", json={"question": "What is the old bridge made of?"}, timeout=30)
    assert r.status_code == 200 and r.json()["answers"][0]["citation"]["paragraph"] == 2
    r = httpx.post(f"{url}/ask", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_eval_against_the_live_server(server, tmp_path) -> None:
    url, docs, _ = server
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    lines: list[str] = []
    run_eval(EvalOptions(questions=qfile, url=url, json_path=out,
                         overrides={"docs_dir": docs}), echo=lines.append)
    report = json.loads(out.read_text(encoding="utf-8"))
    m = report["metrics"]
    assert report["n"] == 3 and report["settings"]["mode"] == f"http {url}"
    assert m["citation_valid"] == 1.0 and m["recall@1"] == 1.0 and m["evidence_hit@1"] == 1.0
    assert m["abstain_acc"] == 1.0 and m["false_abstain"] == 0.0
    assert m["latency_p50_ms"] > 0


def test_eval_url_refuses_a_server_with_another_corpus(server, tmp_path) -> None:
    url, _, _ = server
    other = tmp_path / "other"
    other.mkdir()
    (other / "town.txt").write_text(DOC + "\nA changed line.\n", encoding="utf-8")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps(QUESTIONS[2]) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="citeqa serve --docs"):
        run_eval(EvalOptions(questions=qfile, url=url, overrides={"docs_dir": other}),
                 echo=lambda s: None)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(tmp_path, model_cache) -> None:
    """A server stopped with SIGTERM during an upload answers it, indexes it completely, and
    exits with status 0; the saved index, which the next start loads, has the file."""
    import signal
    import threading

    from citeqa.index.corpus import CorpusIndex

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "town.txt").write_text(DOC, encoding="utf-8")
    data = link_model_cache(tmp_path / "data", model_cache)
    env = {**os.environ, "CITEQA_DATA_DIR": str(data), "CITEQA_API_KEY": "k"}
    # Long enough to embed for a while: the signal arrives while it is being indexed.
    text = "\n\n".join(f"Paragraph {i} says the ferry number {i} left the harbour at dawn."
                       for i in range(200))
    result: dict = {}
    with running_server(["--docs", str(docs)], env, tmp_path / "server.log") as (url, proc):
        def upload() -> None:
            result["response"] = httpx.post(
                f"{url}/documents", headers={"Authorization": "Bearer k"},
                files=[("file", ("ferries.txt", text.encode()))], timeout=120)

        thread = threading.Thread(target=upload)
        thread.start()
        deadline = time.monotonic() + 30
        while not list((data / "index" / "uploads").glob("ferries.txt")):  # the upload is in
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        thread.join(120)
        assert proc.wait(timeout=120) == 0
    assert result["response"].status_code == 201
    # What the next start loads: the saved index has the file, completely.
    index = CorpusIndex.load(data / "index")
    assert index.files["ferries.txt"].paragraphs == 200
    assert sum(u.file == "ferries.txt" for u in index.passages.units) >= 1
