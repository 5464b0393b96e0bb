"""The operational surface: request ids, one JSON log line per request, Prometheus metrics, and
the bounded question queue (fast 503s under overload, normal service after)."""

from __future__ import annotations

import json
import threading
import time

from fastapi.testclient import TestClient

from citeqa.service.api.app import create_app

Q = {"question": "who replaced Soleimani?"}


def test_request_ids_are_echoed_or_made(bundled_qa) -> None:
    with TestClient(create_app(qa=bundled_qa)) as c:
        r = c.post("/ask", json=Q, headers={"X-Request-ID": "client-42.a"})
        assert r.headers["x-request-id"] == "client-42.a"
        made = c.get("/health").headers["x-request-id"]
        assert len(made) == 32 and made != c.get("/health").headers["x-request-id"]
        # Not a sane id (spaces, newline injection): replaced by a new one.
        bad = c.get("/health", headers={"X-Request-ID": "a b\\nforged: 1"})
        assert bad.headers["x-request-id"] != "a b\\nforged: 1"
        assert c.post("/ask", json={"question": ""}).headers["x-request-id"]  # errors too


def test_one_json_log_line_per_request_without_the_question(bundled_qa, make_qa, caplog) -> None:
    with caplog.at_level("INFO", logger="citeqa.access"):
        with TestClient(create_app(qa=bundled_qa)) as c:
            c.post("/ask", json=Q, headers={"X-Request-ID": "r1"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "citeqa.access"]
    (line,) = [x for x in lines if x["request_id"] == "r1"]
    assert line["route"] == "/ask" and line["status"] == 200 and line["method"] == "POST"
    assert line["ms"] > 0 and "question" not in line and "Soleimani" not in json.dumps(lines)
    caplog.clear()
    qa = make_qa(log_questions=True)
    with caplog.at_level("INFO", logger="citeqa.access"):
        with TestClient(create_app(qa=qa)) as c:
            c.post("/ask", json=Q, headers={"X-Request-ID": "r2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "citeqa.access"]
    assert [x["question"] for x in lines if x["request_id"] == "r2"] == [Q["question"]]


def test_metrics_in_prometheus_text_format(bundled_qa) -> None:
    with TestClient(create_app(qa=bundled_qa)) as c:
        c.post("/ask", json=Q)
        c.post("/ask", json={"question": ""})
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'citeqa_requests_total{method="POST",route="/ask",status="200"} 1.0' in text
    assert 'citeqa_requests_total{method="POST",route="/ask",status="422"} 1.0' in text
    assert 'citeqa_request_seconds_count{method="POST",route="/ask"} 2.0' in text
    for stage in ("retrieve", "rerank", "extract"):
        assert f'citeqa_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "citeqa_queue_depth 0.0" in text
    assert 'citeqa_index_units{kind="documents"} 3.0' in text
    assert 'citeqa_index_units{kind="sentences"}' in text and "citeqa_model_load_seconds" in text


def test_a_full_queue_answers_503_at_once_then_serves_again(make_qa) -> None:
    qa = make_qa(max_queue=2)
    with TestClient(create_app(qa=qa)) as c:
        qa._infer_lock.acquire()  # the model is busy: admitted questions wait for it
        results: list[int] = []
        waiting = [threading.Thread(target=lambda: results.append(c.post("/ask", json=Q)
                                                                  .status_code))
                   for _ in range(2)]
        try:
            for t in waiting:
                t.start()
            deadline = time.monotonic() + 30
            while c.app.state.gate.depth < 2:
                assert time.monotonic() < deadline, "the two questions were never admitted"
                time.sleep(0.02)
            started = time.perf_counter()
            flood = [c.post("/ask", json=Q) for _ in range(5)]
            elapsed = time.perf_counter() - started
            assert [r.status_code for r in flood] == [503] * 5
            assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
                       for r in flood)
            assert elapsed < 2.0  # refused at once, not after waiting
            assert "citeqa_rejected_total 5.0" in c.get("/metrics").text
        finally:
            qa._infer_lock.release()
        for t in waiting:
            t.join(60)
        assert results == [200, 200]  # below the bound every question is answered
        assert c.app.state.gate.depth == 0
        assert c.post("/ask", json=Q).status_code == 200  # and service is normal again
