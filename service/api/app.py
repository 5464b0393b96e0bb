"""App factory: routers, error handlers, and the QA instance started with the app."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import JSONResponse
# Starlette's: FastAPI's HTTPException subclasses it, and routing (404, 405) and the body
# limit raise Starlette's own, so one handler gives every error the same JSON shape.
from starlette.exceptions import HTTPException
from starlette.concurrency import run_in_threadpool

from citeqa.service.api.limits import BodyLimit
from citeqa.service.api.observe import Gate, Metrics, Observe
from citeqa.service.api import routes_ask, routes_documents, routes_health, routes_web
from citeqa.service.models import validation_message
from citeqa.index.errors import CiteQAError
from citeqa.service.pipeline import QA
from citeqa.service.settings import Settings

log = logging.getLogger("citeqa")


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def public_message(message: str, settings: Settings) -> str:
    """A message for clients: the server's folders appear by their setting's name, never as
    paths (the server log keeps the full message)."""
    folders = {settings.resolved_index_dir: "$CITEQA_INDEX_DIR", settings.data_dir:
               "$CITEQA_DATA_DIR", Path(settings.docs_dir): "$CITEQA_DOCS_DIR"}
    # Longest first: the index folder usually lies inside the data folder.
    for folder, name in sorted(folders.items(), key=lambda kv: -len(str(kv[0]))):
        for form in {str(folder), str(folder.resolve())}:
            message = message.replace(form, name)
    return message


def create_app(settings: Settings | None = None, qa: QA | None = None) -> FastAPI:
    """``qa``: an already started QA (tests, embedding apps); otherwise one is built from
    ``settings`` and started (index loaded or updated) before the first request."""
    qa = qa or QA(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not qa.ready:
            try:
                started = time.perf_counter()
                report = await run_in_threadpool(qa.start)
                app.state.metrics.model_load.set(time.perf_counter() - started)
                log.info("index ready: %s", report)
                for problem in qa.skipped:
                    log.warning("skipped: %s", problem)
            except (CiteQAError, OSError) as exc:
                # Stay up and say why on /ready, rather than crash-looping.
                app.state.startup_error = public_message(str(exc), qa.settings)
                log.error("index not loaded: %s", exc)
        yield

    app = FastAPI(title="citeqa", version="0.1.0", lifespan=lifespan,
                  description="Extractive question answering with exact citations.")
    app.state.qa = qa
    app.state.startup_error = None
    s = qa.settings
    app.state.metrics = metrics = Metrics()
    app.state.gate = Gate(s.max_queue, metrics)
    app.add_middleware(BodyLimit, json_bytes=s.max_json_bytes, upload_bytes=s.max_upload_bytes)
    if s.cors_origins:  # none by default: only pages served from this origin may call the API
        app.add_middleware(CORSMiddleware, allow_origins=s.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"])
    if s.trusted_hosts:  # a request for another Host is refused before anything else
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=s.trusted_hosts)
    # Outermost: every response, refusals included, gets an id, a log line and its metrics.
    app.add_middleware(Observe, metrics=metrics, log_questions=s.log_questions)
    app.include_router(routes_health.router)
    app.include_router(routes_ask.router)
    app.include_router(routes_documents.router)
    app.include_router(routes_web.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only plain fields: pydantic's ``ctx`` can hold exception objects.
        plain = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                 for e in exc.errors()]
        return _error(422, validation_message(exc.errors()) or "invalid request", detail=plain)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(CiteQAError)
    async def _citeqa(request: Request, exc: CiteQAError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(exc.status, public_message(str(exc), qa.settings))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; see the server log")

    return app
