"""Shared dependencies: the QA instance, and who may read and write."""

from __future__ import annotations

import secrets

from fastapi import Header, HTTPException, Request, status

from citeqa.service.pipeline import QA


def get_qa(request: Request) -> QA:
    qa: QA = request.app.state.qa
    if not qa.ready:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the index is still loading")
    return qa


def require_write_key(request: Request, authorization: str | None = Header(None)) -> None:
    """Writes need ``Authorization: Bearer <CITEQA_API_KEY>``; with no key configured they
    are disabled, so a server started without one can never be modified remotely."""
    key = request.app.state.qa.settings.api_key
    if not key:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "write endpoints are disabled: set CITEQA_API_KEY to enable them")
    _check_bearer(authorization, key)


def require_read_key(request: Request, authorization: str | None = Header(None)) -> None:
    """With ``protect_reads`` (off by default), reads need the same key as writes."""
    settings = request.app.state.qa.settings
    if settings.protect_reads:
        _check_bearer(authorization, settings.api_key or "")


def _check_bearer(authorization: str | None, key: str) -> None:
    """The constant-time comparison of a bearer token with the key."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong API key",
                            headers={"WWW-Authenticate": "Bearer"})
