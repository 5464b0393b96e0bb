"""citeqa: extractive question answering with exact citations.

The public Python API is :class:`QA`; the models it returns are in :mod:`service.models`.
"""

from service.errors import CiteQAError, Conflict, InvalidInput, NotFound, NotReady
from service.models import Answer, AskResponse, Citation, Passage, SearchResponse
from service.pipeline import QA
from service.settings import Settings

__all__ = [
    "QA", "Settings", "AskResponse", "SearchResponse", "Answer", "Citation", "Passage",
    "CiteQAError", "InvalidInput", "NotFound", "Conflict", "NotReady",
]
