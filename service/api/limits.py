"""Request bodies are bounded before they are read.

``BodyLimit`` is a small ASGI middleware: a body whose ``Content-Length`` is over its route's
limit is refused with 413 without reading a byte, and a body without one (chunked) is counted
as it streams in and refused as soon as it passes the limit, so nothing over the limit is ever
buffered or spooled. Uploads (``POST /documents``) get the upload limit, every other request
the JSON limit; both are settings.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB" if n >= 2**10 else f"{n} bytes"


def too_large(what: str, limit: int, setting: str) -> str:
    return f"{what} is larger than the limit of {_mib(limit)} ({limit} bytes, {setting})"


class BodyLimit:
    def __init__(self, app: ASGIApp, *, json_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    def _limit(self, scope: Scope) -> tuple[int, str, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/documents":
            return self.upload_bytes, "the upload", "CITEQA_MAX_UPLOAD_BYTES"
        return self.json_bytes, "the request body", "CITEQA_MAX_JSON_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what, setting = self._limit(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await JSONResponse({"error": too_large(what, limit, setting)}, status_code=413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises HTTPExceptions from body parsing; the app's handler
                    # turns it into the JSON error.
                    raise HTTPException(413, too_large(what, limit, setting))
            return msg

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
