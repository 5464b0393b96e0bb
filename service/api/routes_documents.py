from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from starlette.datastructures import UploadFile

from citeqa.service.api.deps import get_qa, require_write_key
from citeqa.index.errors import InvalidInput
from citeqa.service.models import DocumentList, ParagraphOut, UploadResult
from citeqa.service.pipeline import QA

router = APIRouter(prefix="/documents", tags=["documents"])

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@router.get("", response_model=DocumentList)
def list_documents(qa: QA = Depends(get_qa)) -> DocumentList:
    """Indexed files with their paragraph counts and content hashes."""
    return DocumentList(documents=qa.documents())


@router.get("/{file}/paragraphs/{number}", response_model=ParagraphOut)
def get_paragraph(file: str, number: int, qa: QA = Depends(get_qa)) -> ParagraphOut:
    """Resolve a citation: the paragraph's exact text and offsets."""
    return qa.paragraph(file, number)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadResult,
             dependencies=[Depends(require_write_key)],
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"],
                 "properties": {"file": {"type": "array",
                                         "items": {"type": "string", "format": "binary"}}}}}}}})
async def upload_documents(request: Request, qa: QA = Depends(get_qa)) -> UploadResult:
    """Add or replace files (multipart ``file`` parts) and index them before responding."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("send the files as multipart/form-data with one or more 'file' parts")
    try:
        form = await request.form()
    except Exception as exc:  # malformed multipart bodies
        raise InvalidInput(f"unreadable multipart body: {exc}") from None
    parts = [p for p in form.getlist("file") if isinstance(p, UploadFile)]
    if not parts:
        raise InvalidInput("no 'file' parts in the form")
    files = []
    for part in parts:
        data = await part.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise InvalidInput(f"{part.filename}: larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
        files.append((part.filename or "", data))
    # Embedding is CPU-bound: run it in the thread pool, not on the event loop.
    from starlette.concurrency import run_in_threadpool

    return UploadResult(documents=await run_in_threadpool(qa.add_documents, files))


@router.delete("/{file}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_write_key)])
def delete_document(file: str, qa: QA = Depends(get_qa)) -> Response:
    """Remove an uploaded file and its index entries."""
    qa.remove_document(file)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
