"""`citeqa serve` under concurrent reads and writes: 8 threads ask and search about a file that
another thread keeps uploading, replacing and deleting. No 5xx; every citation of that file is
exact for one of its versions (text and paragraph); nothing cites it while it is deleted."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from tests.conftest import link_model_cache, running_server

KEY = "c0ncurrent"
AUTH = {"Authorization": f"Bearer {KEY}"}
TARGET = "harbor.txt"
WRITE_SECONDS = 20.0
READERS = 8
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange"]
QUESTIONS = ["What colour is the Zephyr lighthouse painted?",
             "Which keeper number keeps the Zephyr lighthouse?",
             "How many crossings does the ferry schedule list?"]
BACKGROUND = ("Tiny Town was founded in 1820 by river traders.\n\n"
              "The old bridge is made of red stone and spans the Tiny River.\n\n"
              "The town council meets every Tuesday in the library.\n")


def version_text(v: int) -> str:
    """Version ``v`` of the target: every sentence names its version, and the number of
    paragraphs before the lighthouse paragraph changes with it, so a citation tells which
    version it came from (by text and offsets) and whether its paragraph number is right."""
    fillers = [f"Harbour log {v}.{i}: the ferry schedule of revision {v} lists {v + i} crossings."
               for i in range(1 + v % 3)]
    key = (f"In revision {v} the Zephyr lighthouse is painted {COLOURS[v % len(COLOURS)]} and "
           f"is kept by keeper number {v}.")
    return "\n\n".join([*fillers, key, f"Revision {v} of the harbour notes ends here."]) + "\n"


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each blank-line-separated paragraph, in order (numbered from 1)."""
    spans, start = [], 0
    for block in text.split("\n\n"):
        spans.append((start, start + len(block)))
        start += len(block) + 2
    return spans


def exact_in_some_version(cited: dict, text: str, versions: dict[int, str]) -> list[int]:
    """The versions in which ``text == version[start:end]`` and the span lies in paragraph
    number ``cited['paragraph']``."""
    found = []
    for v, body in versions.items():
        start, end, number = cited["start"], cited["end"], cited["paragraph"]
        spans = paragraph_spans(body)
        if body[start:end] != text or not 1 <= number <= len(spans):
            continue
        p_start, p_end = spans[number - 1]
        if p_start <= start and end <= p_end:
            found.append(v)
    return found


@pytest.fixture
def server(tmp_path, model_cache):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "town.txt").write_text(BACKGROUND, encoding="utf-8")
    data = link_model_cache(tmp_path / "data", model_cache)
    env = {**os.environ, "CITEQA_DATA_DIR": str(data), "CITEQA_API_KEY": KEY}
    log_path = tmp_path / "server.log"
    with running_server(["--docs", str(docs)], env, log_path) as (url, _):
        yield url, log_path


def test_reads_during_uploads_replacements_and_deletes(server) -> None:
    url, log_path = server
    versions: dict[int, str] = {}
    # (delete returned, next upload sent): the target is absent from the index in between.
    absent: list[tuple[float, float]] = []
    writes: list[tuple[str, int]] = []
    results: list[tuple[float, float, str, int, dict | str]] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        v = 0
        deadline = time.monotonic() + WRITE_SECONDS
        deleted_at: float | None = None
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
                while time.monotonic() < deadline:
                    for _ in range(2):  # upload, then replace with the next version
                        v += 1
                        versions[v] = version_text(v)
                        sent = time.monotonic()
                        if deleted_at is not None:
                            absent.append((deleted_at, sent))
                            deleted_at = None
                        r = c.post("/documents",
                                   files=[("file", (TARGET, versions[v].encode("utf-8")))])
                        writes.append(("upload", r.status_code))
                        assert r.status_code == 201, r.text
                        time.sleep(0.6)
                    r = c.delete(f"/documents/{TARGET}")
                    writes.append(("delete", r.status_code))
                    assert r.status_code == 204, r.text
                    deleted_at = time.monotonic()
                    time.sleep(1.2)
                if deleted_at is not None:
                    absent.append((deleted_at, time.monotonic()))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            done.set()

    def reader(i: int) -> None:
        n = i
        try:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not done.is_set():
                    route = "/ask" if n % 2 == 0 else "/search"
                    question = QUESTIONS[n % len(QUESTIONS)]
                    n += 1
                    t0 = time.monotonic()
                    r = c.post(route, json={"question": question, "top_k": 3})
                    t1 = time.monotonic()
                    body = r.json() if r.headers.get("content-type", "").startswith(
                        "application/json") else r.text
                    results.append((t0, t1, route, r.status_code, body))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WRITE_SECONDS + 90)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert not errors, errors

    statuses = sorted({s for *_, s, _ in results})
    assert all(s < 500 for s in statuses), (statuses, log_path.read_text(errors="replace")[-3000:])
    assert statuses == [200], statuses
    assert len(versions) >= 4 and ("delete", 204) in writes, writes

    cited_target = in_absent_window = 0
    for t0, t1, route, _, body in results:
        cited = [(a["citation"], a["text"]) for a in body.get("answers", [])]
        cited += [(p, p["text"]) for p in body["passages"]]
        ours = [(c, text) for c, text in cited if c["file"] == TARGET]
        for citation, text in ours:
            assert exact_in_some_version(citation, text, versions), (route, citation, text)
        cited_target += bool(ours)
        # Sent after a delete returned and answered before the next upload was sent.
        if any(gone <= t0 and t1 <= back for gone, back in absent):
            in_absent_window += 1
            assert not ours, (route, t0, ours)
    print(f"{len(results)} requests, {len(versions)} versions, {len(absent)} deletes; "
          f"{cited_target} cited the file, {in_absent_window} fell in a deleted window")
    # Not vacuous: the target was cited often, and many requests fell in deleted windows.
    assert cited_target >= 10 and in_absent_window >= 5, (cited_target, in_absent_window,
                                                           len(results))
