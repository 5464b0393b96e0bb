from __future__ import annotations

from fastapi import APIRouter, Depends

from citeqa.service.api.deps import get_qa, require_read_key
from citeqa.service.models import AskRequest, AskResponse, SearchRequest, SearchResponse
from citeqa.service.pipeline import QA

router = APIRouter(tags=["questions"], dependencies=[Depends(require_read_key)])


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, qa: QA = Depends(get_qa)) -> AskResponse:
    """Answer a question with verbatim, cited spans; ``no_answer`` when the articles do not."""
    return qa.ask(body.question, top_k=body.top_k)


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, qa: QA = Depends(get_qa)) -> SearchResponse:
    """Retrieve the best passages (no answer extraction)."""
    return qa.search(body.question, top_k=body.top_k)
