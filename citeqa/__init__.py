"""citeqa: extractive question answering with exact citations.

    from citeqa import QA
    with QA.from_directory("articles/") as qa:
        print(qa.ask("why was the counter-ISIS campaign paused?").answers[0].citation)

The public Python API is :class:`QA`; every error it raises for bad input or state is a
:class:`CiteQAError`. Installed, the repository's ``index/``, ``service/`` and ``eval/`` folders
are the sub-packages ``citeqa.index``, ``citeqa.service`` and ``citeqa.eval`` (pyproject.toml's
``package-dir``); the bundled articles and models are package data under ``citeqa/``.
"""

from citeqa.index.errors import (
    CiteQAError, Conflict, DocumentError, IndexMismatchError, IndexNotFoundError, IndexProblem,
    InvalidInput, ModelNotFound, NotFound, NotReady,
)
from citeqa.service.models import (
    Answer, AskResponse, Citation, DocumentInfo, IndexStats, Passage, SearchResponse,
)
from citeqa.service.pipeline import QA
from citeqa.service.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "QA", "Settings", "AskResponse", "SearchResponse", "Answer", "Citation", "Passage",
    "DocumentInfo", "IndexStats",
    "CiteQAError", "InvalidInput", "NotFound", "Conflict", "NotReady", "DocumentError",
    "IndexProblem", "IndexNotFoundError", "IndexMismatchError", "ModelNotFound",
]
