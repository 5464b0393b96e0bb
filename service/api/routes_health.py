from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from citeqa.service.models import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route and status, per-stage latency, queue
    depth, index size, model load time."""
    m = request.app.state.metrics
    qa = request.app.state.qa
    if qa.ready:
        stats = qa.stats()
        for kind, n in (("documents", stats.documents), ("passages", stats.passages),
                        ("sentences", stats.sentences)):
            m.index.labels(kind).set(n)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready}})
def ready(request: Request):
    """Readiness: the index is loaded and questions can be answered."""
    qa = request.app.state.qa
    if not qa.ready:
        detail = getattr(request.app.state, "startup_error", None) or "loading"
        return JSONResponse(Ready(ready=False, detail=detail).model_dump(), status_code=503)
    stats = qa.stats()
    return Ready(ready=True, documents=stats.documents, passages=stats.passages,
                 sentences=stats.sentences)
