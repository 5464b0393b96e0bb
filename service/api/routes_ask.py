from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from citeqa.service.api.deps import get_qa, require_read_key
from citeqa.service.api.observe import admitted
from citeqa.service.models import (AskRequest, AskResponse, SearchRequest, SearchResponse,
                                   error_responses)
from citeqa.service.pipeline import QA

# Questions take a place in the bounded queue (503 with Retry-After when it is full).
router = APIRouter(tags=["questions"],
                   dependencies=[Depends(require_read_key), Depends(admitted)],
                   responses=error_responses(400, 401, 413, 422, 503))


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, request: Request, qa: QA = Depends(get_qa)) -> AskResponse:
    """Answer a question with verbatim, cited spans; ``no_answer`` when the articles do not."""
    request.state.question = body.question  # the access log shows it only with log_questions
    response = qa.ask(body.question, top_k=body.top_k)
    request.app.state.metrics.observe_stages(response.timings_ms)
    return response


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, request: Request, qa: QA = Depends(get_qa)) -> SearchResponse:
    """Retrieve the best passages (no answer extraction)."""
    request.state.question = body.question
    response = qa.search(body.question, top_k=body.top_k)
    request.app.state.metrics.observe_stages(response.timings_ms)
    return response
