from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from citeqa.index.errors import InvalidInput
from citeqa.service.api.deps import get_qa, require_read_key, require_write_key
from citeqa.service.api.limits import too_large
from citeqa.service.models import DocumentList, ParagraphOut, UploadResult, error_responses
from citeqa.service.pipeline import QA

router = APIRouter(prefix="/documents", tags=["documents"])


@router.get("", response_model=DocumentList, dependencies=[Depends(require_read_key)],
            responses=error_responses(401, 413, 422, 503))
def list_documents(qa: QA = Depends(get_qa)) -> DocumentList:
    """Indexed files with their paragraph counts and content hashes."""
    return DocumentList(documents=qa.documents())


@router.get("/{file}/paragraphs/{number}", response_model=ParagraphOut,
            dependencies=[Depends(require_read_key)],
            responses=error_responses(401, 404, 413, 422, 503))
def get_paragraph(file: str, number: int, qa: QA = Depends(get_qa)) -> ParagraphOut:
    """Resolve a citation: the paragraph's exact text and offsets."""
    return qa.paragraph(file, number)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadResult,
             dependencies=[Depends(require_write_key)],
             responses=error_responses(401, 403, 413, 415, 422, 503),
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"],
                 "properties": {"file": {"type": "array",
                                         "items": {"type": "string", "format": "binary"}}}},
                 # The part's file name is the document's name (.txt, .md, .markdown, .text).
                 "encoding": {"file": {"headers": {"Content-Disposition": {
                     "schema": {"type": "string"},
                     "example": 'form-data; name="file"; filename="notes.txt"'}}}}}}}})
async def upload_documents(request: Request, qa: QA = Depends(get_qa)) -> UploadResult:
    """Add or replace files (multipart ``file`` parts) and index them before responding."""
    s = qa.settings
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the files as multipart/form-data with one or more 'file' parts")
    try:
        form = await request.form(max_files=s.max_upload_files, max_fields=s.max_upload_files)
    except HTTPException as exc:
        if exc.status_code == 413:  # the body limit (service/api/limits.py)
            raise
        if "Too many" in str(exc.detail):
            raise HTTPException(413, f"at most {s.max_upload_files} files per upload "
                                "(CITEQA_MAX_UPLOAD_FILES)") from None
        raise InvalidInput(f"unreadable multipart body: {exc.detail}") from None
    except Exception as exc:  # malformed or truncated multipart bodies
        raise InvalidInput(f"unreadable multipart body: {exc}") from None
    parts = [p for p in form.getlist("file") if isinstance(p, UploadFile)]
    if not parts:
        raise InvalidInput("no 'file' parts in the form")
    files = []
    for part in parts:
        if part.size is not None and part.size > s.max_upload_file_bytes:
            raise HTTPException(413, too_large(f"{part.filename!r}", s.max_upload_file_bytes,
                                               "CITEQA_MAX_UPLOAD_FILE_BYTES"))
        files.append((part.filename or "", await part.read()))
    # Embedding is CPU-bound: run it in the thread pool, not on the event loop.
    return UploadResult(documents=await run_in_threadpool(qa.add_documents, files))


@router.delete("/{file}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_write_key)],
               responses=error_responses(401, 403, 404, 409, 413, 422, 503))
def delete_document(file: str, qa: QA = Depends(get_qa)) -> Response:
    """Remove an uploaded file and its index entries."""
    qa.remove_document(file)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
