"""The one error root of citeqa. Every error the Python API raises for bad input or state is a
:class:`CiteQAError`, so an embedding app catches one type; ``status`` is the HTTP status the API
answers with, and the CLI prints the message and exits non-zero.

It lives in the lowest layer so that ``index`` (documents, persistence) and ``service`` (the
pipeline, models) raise the same types.
"""

from __future__ import annotations


class CiteQAError(Exception):
    status = 400


class InvalidInput(CiteQAError, ValueError):
    status = 422


class NotFound(CiteQAError, LookupError):
    status = 404


class Conflict(CiteQAError):
    status = 409


class NotReady(CiteQAError):
    status = 503


class DocumentError(InvalidInput):
    """A file that cannot be indexed; the message names the file and the reason."""


class IndexProblem(CiteQAError):
    """The index on disk cannot be used as it is; the message says what to do."""

    status = 503


class IndexNotFoundError(IndexProblem):
    pass


class IndexMismatchError(IndexProblem):
    """The index on disk was built with another model, format or unit settings."""


class ModelNotFound(CiteQAError, FileNotFoundError):
    """A configured model file or folder is missing or unreadable."""

    status = 503
