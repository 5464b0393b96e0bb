"""The browser page at ``GET /``: static files shipped as package data (``citeqa/service/web``),
found with importlib.resources. The page calls only the JSON API; nothing is rendered here."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

WEB = files("citeqa.service") / "web"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Defence in depth: the page inserts user and article text as text, never as HTML, and
# even so no inline script, foreign origin or plugin could run in it.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    suffix = name[name.rfind("."):] if "." in name else ""
    resource = WEB / name
    if "/" in name or name.startswith(".") or suffix not in MEDIA_TYPES or not resource.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{name}: no such file")
    return Response(resource.read_bytes(), media_type=MEDIA_TYPES[suffix], headers=HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
def page() -> Response:
    """The question page (HTML); the OpenAPI docs stay at /docs."""
    return _file("index.html")


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
def static(name: str) -> Response:
    """The page's script, style sheet and icon."""
    return _file(name)
