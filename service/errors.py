"""Errors with messages meant for the user; the API maps them to HTTP statuses, the CLI to
exit codes."""


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
