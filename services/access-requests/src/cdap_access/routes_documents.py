"""Routes of a request's documents: the partner's upload and the approvers' viewer."""

from __future__ import annotations

import base64
import re
import unicodedata
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Path, UploadFile
from fastapi.responses import JSONResponse, Response

from cdap_access import idempotency, queries
from cdap_access import requests as service
from cdap_access.requests import Upload
from cdap_access.schemas import UUID_PATTERN
from cdap_access.web import RequestId, Write, summary
from cdap_shared.auth import CurrentActor
from cdap_shared.bodylimit import UPLOAD_MAX_BODY, max_body
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["access requests"])
MAX_FILES = 10


def safe_filename(name: str | None) -> str:
    """A file name fit for a header and a listing: no path, no control or quote characters."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    cleaned = re.sub(r"[^\w .()\-]", "_", base).strip(" .")[:200]
    return cleaned or "document.pdf"


def content_disposition(filename: str) -> str:
    """`inline` with an ASCII fallback name and the real one in RFC 5987 form (headers are Latin-1)."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


@router.post(
    "/access-requests/{request_id}/documents",
    status_code=201,
    responses={403: {}, 409: {}, 413: {}, 415: {}, 422: {}},
    openapi_extra={
        **max_body(UPLOAD_MAX_BODY),
        "requestBody": {
            "content": {"multipart/form-data": {"example": {"files": ["convention-signee.pdf"]}}}
        },
    },
)
async def upload_documents(
    request_id: RequestId,
    cmd: Write,
    files: Annotated[list[UploadFile], File(description="PDF documents, each at most 10 MB")],
) -> JSONResponse:
    """The partner sends documents; a request waiting for them goes back to the stage-1 queue."""
    if len(files) > MAX_FILES:
        raise Problem(
            422, "Too many files", f"Send at most {MAX_FILES} files at once.", reason="too_many_files"
        )
    await service.check_uploader(cmd.session, cmd.actor, request_id)
    await cmd.session.rollback()  # end the read transaction: the upload is judged again when written
    limit = cmd.ctx.settings.max_document_bytes
    uploads = [Upload(safe_filename(f.filename), await f.read(limit + 1)) for f in files]

    async def action() -> idempotency.Outcome:
        received = await service.upload_documents(
            cmd.session, cmd.ctx, cmd.actor, request_id, uploads, cmd.now
        )
        listed = [
            {"id": d.id, "filename": d.filename, "size": d.size, "sha256": d.sha256}
            for d in received.documents
        ]
        return 201, summary(received.request) | {"documents": listed}

    return await cmd.commit(action)


@router.get(
    "/access-requests/{request_id}/documents/{document_id}",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, 403: {}, 404: {}},
)
async def get_document(
    request_id: RequestId,
    document_id: Annotated[str, Path(pattern=UUID_PATTERN)],
    actor: CurrentActor,
    session: SessionDep,
) -> Response:
    """The document viewer: the PDF as stored, with its SHA-256 in `Repr-Digest`."""
    document = await queries.document(session, actor, request_id, document_id)
    digest = base64.b64encode(bytes.fromhex(document.sha256)).decode()
    return Response(
        document.content,
        media_type="application/pdf",
        headers={
            "Content-Disposition": content_disposition(document.filename),
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
        },
    )
