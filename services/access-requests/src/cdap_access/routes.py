"""HTTP entrypoints of the access-requests service: thin, they call the service functions.

`app.state.clock` gives "now" (tests replace it to travel in time); writes go through
`idempotency.run_once`, which commits, so a retried call with the same `Idempotency-Key` has one effect.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Header, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from cdap_access import idempotency, queries, removals
from cdap_access import requests as service
from cdap_access.calendar import local_date
from cdap_access.domain import State
from cdap_access.requests import Context, Submission, Upload, actor_of
from cdap_access.schemas import (
    UUID_PATTERN,
    CommentIn,
    DecisionIn,
    QueuePage,
    RemovalIn,
    RemovalOut,
    RequestState,
    SubmissionIn,
    WithdrawIn,
)
from cdap_shared.auth import CurrentPrincipal, Principal
from cdap_shared.bodylimit import UPLOAD_MAX_BODY, max_body
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["access requests"])

RequestId = Annotated[str, Path(pattern=UUID_PATTERN)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]
MAX_FILES = 10


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


async def _write(
    request: Request,
    session: SessionDep,
    principal: Principal,
    action: Callable[[], Awaitable[idempotency.Outcome]],
    *,
    key: str | None = None,
    canonical_body: str = "",
) -> JSONResponse:
    """Run a write and commit it (once per `Idempotency-Key`, when one is given)."""
    print_ = idempotency.fingerprint(request.method, request.url.path, canonical_body)
    status, body = await idempotency.run_once(
        session, actor=principal.sub, key=key, print_=print_, action=action
    )
    return JSONResponse(body, status_code=status)


def _contact(principal: Principal, body: SubmissionIn) -> str | None:
    """Where the partner hears of decisions: the token's `email` claim, else the body's `contact_email`."""
    claimed = principal.claims.get("email")
    return claimed if isinstance(claimed, str) and "@" in claimed else body.contact_email


@router.post(
    "/access-requests", status_code=201, response_model=RequestState, responses={403: {}, 409: {}, 422: {}}
)
async def submit(
    body: SubmissionIn,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """A partner administrator asks for a habilitation for one of their staff."""
    form = Submission(
        organisation_id=body.organisation_id,
        applicant=body.applicant.model_dump(),
        profile=body.profile,
        department=body.department,
        justification=body.justification,
        valid_until=body.valid_until,
        contact_email=_contact(principal, body),
    )
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)

    async def action() -> idempotency.Outcome:
        return await service.submit(session, ctx, actor, form, now)

    return await _write(request, session, principal, action, key=key, canonical_body=body.model_dump_json())


@router.get("/access-requests", response_model=QueuePage, responses={400: {}, 403: {}})
async def list_requests(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    department: Annotated[str | None, Query(min_length=2, max_length=3)] = None,
    state: State | None = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The queue: requests the caller may see, oldest due date first (closed ones, with none, last)."""
    today = local_date(_now(request), _ctx(request).settings.timezone)
    return await queries.queue(
        session,
        actor_of(principal),
        today=today,
        department=department,
        state=state.value if state else None,
        cursor=cursor,
        limit=limit,
    )


@router.get("/access-requests/{request_id}", responses={403: {}, 404: {}})
async def get_request(
    request_id: RequestId, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> dict[str, Any]:
    """One request with its documents and history (`at`, `actor`, `action`, `comment`)."""
    today = local_date(_now(request), _ctx(request).settings.timezone)
    return await queries.detail(session, actor_of(principal), request_id, today)


@router.post(
    "/access-requests/{request_id}/decisions", response_model=RequestState, responses={403: {}, 409: {}}
)
async def decide(
    request_id: RequestId,
    body: DecisionIn,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    key: IdempotencyKey = None,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=20)] = None,
) -> JSONResponse:
    """Approve, reject (with a reason) or request documents; the request's state says which stage.

    `If-Match: "<version>"` (the `version` last read) turns a decision on a changed request into 409.
    """
    expected = _version(if_match)
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)

    async def action() -> idempotency.Outcome:
        return await service.decide(
            session,
            ctx,
            actor,
            request_id,
            decision=body.decision,
            comment=body.comment,
            documents=body.documents,
            expected_version=expected,
            now=now,
        )

    return await _write(request, session, principal, action, key=key, canonical_body=body.model_dump_json())


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise Problem(
            400, "Invalid If-Match", 'Send the version you read, e.g. If-Match: "3".', reason="bad_if_match"
        )
    return int(value)


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
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    files: Annotated[list[UploadFile], File(description="PDF documents, each at most 10 MB")],
) -> JSONResponse:
    """The partner sends documents; a request waiting for them goes back to the stage-1 queue."""
    if len(files) > MAX_FILES:
        raise Problem(
            422, "Too many files", f"Send at most {MAX_FILES} files at once.", reason="too_many_files"
        )
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)
    await service.check_uploader(session, actor, request_id)
    await session.rollback()  # end the read transaction: the upload is judged again when written
    limit = ctx.settings.max_document_bytes
    uploads = [Upload(safe_filename(f.filename), await f.read(limit + 1)) for f in files]
    return await _write(
        request,
        session,
        principal,
        lambda: service.upload_documents(session, ctx, actor, request_id, uploads, now),
    )


@router.get(
    "/access-requests/{request_id}/documents/{document_id}",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, 403: {}, 404: {}},
)
async def get_document(
    request_id: RequestId,
    document_id: Annotated[str, Path(pattern=UUID_PATTERN)],
    principal: CurrentPrincipal,
    session: SessionDep,
) -> Response:
    """The document viewer: the PDF as stored, with its SHA-256 in `Repr-Digest`."""
    document = await queries.document(session, actor_of(principal), request_id, document_id)
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


@router.post(
    "/access-requests/{request_id}/withdraw", response_model=RequestState, responses={403: {}, 409: {}}
)
async def withdraw(
    request_id: RequestId,
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    body: WithdrawIn | None = None,
) -> JSONResponse:
    """The partner administrator withdraws a request that is still open."""
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)
    comment = body.comment if body else None
    return await _write(
        request, session, principal, lambda: service.withdraw(session, ctx, actor, request_id, comment, now)
    )


@router.post("/access-requests/{request_id}/comments", status_code=201, responses={403: {}, 404: {}})
async def comment(
    request_id: RequestId, body: CommentIn, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> JSONResponse:
    """A message in the request's thread, between the partner and the department's CAF."""
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)
    return await _write(
        request,
        session,
        principal,
        lambda: service.add_comment(session, ctx, actor, request_id, body.text, now),
    )


@router.post(
    "/grants/{grant_id}/removal-requests",
    status_code=202,
    response_model=RemovalOut,
    responses={403: {}, 404: {}, 409: {}},
)
async def request_removal(
    grant_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    body: RemovalIn | None = None,
) -> JSONResponse:
    """A partner administrator asks that a grant of their organisation be removed (identity revokes it)."""
    ctx, now, actor = _ctx(request), _now(request), actor_of(principal)
    return await _write(
        request,
        session,
        principal,
        lambda: removals.request_removal(
            session, ctx.settings, actor, grant_id, body.comment if body else None, now
        ),
    )


@router.get("/profiles")
async def profiles(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """The profiles that may be requested, and which need a second approval."""
    return {"profiles": {name: p.model_dump() for name, p in _ctx(request).catalogue.profiles.items()}}
