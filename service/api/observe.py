"""What operators run a service with: a request id on every response, one JSON log line per
request, Prometheus metrics at ``GET /metrics``, and a bounded queue for model work.

- ``X-Request-ID``: the client's, when it sends a sane one, else a new one; the log line carries
  it, so a user's report can be matched to the server's record.
- The log line (logger ``citeqa.access``): time, id, method, route, status, milliseconds; the
  question text only with ``log_questions``.
- Metrics live in the app's own registry (several apps in one process never collide): requests
  and latency by route and status, per-stage latency, queue depth, index size, model load time.
- ``Gate``: questions wait for the one inference executor; when ``max_queue`` are already
  waiting or running, a new one gets 503 with ``Retry-After`` at once instead of waiting ever
  longer.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("citeqa.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("citeqa_requests", "HTTP requests", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("citeqa_request_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=_BUCKETS, registry=r)
        self.stage = Histogram("citeqa_stage_seconds", "pipeline stage latency per question",
                               ["stage"], buckets=_BUCKETS, registry=r)
        self.queue = Gauge("citeqa_queue_depth", "questions waiting or running", registry=r)
        self.rejected = Counter("citeqa_rejected", "questions refused with 503 (queue full)",
                                registry=r)
        self.index = Gauge("citeqa_index_units", "size of the loaded index", ["kind"], registry=r)
        self.model_load = Gauge("citeqa_model_load_seconds", "model load and index start time",
                                registry=r)

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage in ("retrieve", "rerank", "extract"):
            if stage in timings_ms:
                self.stage.labels(stage).observe(timings_ms[stage] / 1000)


class Gate:
    """At most ``limit`` questions admitted (waiting for or holding the inference executor)."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.depth = 0
        self._lock = threading.Lock()
        self._metrics = metrics

    def enter(self) -> bool:
        with self._lock:
            if self.depth >= self.limit:
                return False
            self.depth += 1
            self._metrics.queue.set(self.depth)
            return True

    def leave(self) -> None:
        with self._lock:
            self.depth -= 1
            self._metrics.queue.set(self.depth)


async def admitted(request: Request) -> AsyncIterator[None]:
    """Dependency of the question routes: a place in the queue, or 503 with Retry-After."""
    gate: Gate = request.app.state.gate
    if not gate.enter():
        request.app.state.metrics.rejected.inc()
        raise HTTPException(503, f"busy: {gate.limit} questions are already queued; retry "
                            "shortly", headers={"Retry-After": "1"})
    try:
        yield
    finally:
        gate.leave()


class Observe:
    """ASGI middleware: request id, access log line, request metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, log_questions: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_questions = log_questions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(seconds)
            line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                    "request_id": request_id, "method": method, "route": route,
                    "status": status, "ms": round(seconds * 1000, 1)}
            question = scope["state"].get("question")
            if self.log_questions and question is not None:
                line["question"] = question
            access_log.info(json.dumps(line, ensure_ascii=False))
