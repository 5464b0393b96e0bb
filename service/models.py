"""Pydantic models at the edges: what the Python API returns and the HTTP API serialises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from citeqa.index.errors import InvalidInput

MAX_QUESTION_CHARS = 1000
MAX_TOP_K = 50


class Citation(BaseModel):
    file: str
    paragraph: int = Field(description="1-based paragraph (blank-line-separated block) number")
    start: int = Field(description="character offset into the UTF-8 decoded file, inclusive")
    end: int = Field(description="character offset, exclusive: file_text[start:end] == text")


class Context(BaseModel):
    """The sentence that contains a short answer span, so a UI can highlight the span in it."""

    text: str
    start: int
    end: int


class Answer(BaseModel):
    text: str
    score: float = Field(description="confidence in 0..1; answers below the threshold abstain")
    citation: Citation
    context: Context | None = None


class Passage(BaseModel):
    file: str
    paragraph: int
    start: int
    end: int
    text: str
    score: float


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be empty or whitespace")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            # JSON can carry them ("\ud800"), but they are no text: no tokenizer takes them.
            raise ValueError("question must not contain unpaired surrogate characters")
        return value


class AskRequest(_Query):
    pass


class SearchRequest(_Query):
    pass


class AskResponse(BaseModel):
    question: str
    no_answer: bool
    answers: list[Answer]
    passages: list[Passage]
    timings_ms: dict[str, float]


class SearchResponse(BaseModel):
    question: str
    passages: list[Passage]
    timings_ms: dict[str, float]


class DocumentInfo(BaseModel):
    file: str
    paragraphs: int
    sha256: str
    source: str = Field(description="'docs' (read-only source folder) or 'upload'")


class DocumentList(BaseModel):
    documents: list[DocumentInfo]


class ParagraphOut(BaseModel):
    file: str
    paragraph: int
    start: int
    end: int
    text: str
    retrievable: bool = Field(description="false for noise blocks (alt text, headings, captions)")


class UploadResult(BaseModel):
    documents: list[DocumentInfo]


class IndexStats(BaseModel):
    """Size of the loaded index."""

    documents: int
    passages: int
    sentences: int
    index_dir: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    documents: int = 0
    passages: int = 0
    sentences: int = 0
    detail: str | None = None


class ErrorOut(BaseModel):
    """Every error the HTTP API answers with (4xx, 5xx): one message for a person."""

    error: str
    detail: list[dict[str, Any]] | None = Field(
        None, description="422 for a malformed request only: the problems, field by field")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error statuses it can answer with, each with the
    ``{"error": ...}`` body, so the OpenAPI schema documents what the API really returns."""
    return {code: {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


_ERROR_DESCRIPTIONS = {
    400: "the body is not parseable (e.g. invalid JSON)",
    401: "missing or wrong API key",
    403: "writes are disabled: no API key is configured",
    404: "no such document or paragraph",
    409: "the document belongs to the read-only source folder",
    413: "the body (or one file, or the number of files) is over its limit",
    415: "the body is not multipart/form-data",
    422: "invalid request: the message says which field or file and why",
    503: "busy (question queue full; see Retry-After) or the index is not loaded",
}


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line for the user from pydantic's (or FastAPI's) ``exc.errors()``:
    ``field: problem; ...``."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], /, **values: Any) -> Model:
    """``model(**values)``, or ``InvalidInput`` with :func:`validation_message`'s line: how
    the Python API and the CLI check what a user gives them."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc.errors())) from None
