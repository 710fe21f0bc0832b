"""Routes of the access requests: submit, the queue, one request, decisions, withdrawal, comments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from cdap_access import idempotency, queries
from cdap_access import requests as service
from cdap_access.calendar import local_date
from cdap_access.domain import State
from cdap_access.requests import Submission, actor_of
from cdap_access.schemas import CommentIn, DecisionIn, QueuePage, RequestState, SubmissionIn, WithdrawIn
from cdap_access.web import IdempotencyKey, RequestId, context, current_time, write
from cdap_shared.auth import CurrentPrincipal, Principal
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["access requests"])


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
    ctx, now, actor = context(request), current_time(request), actor_of(principal)

    async def action() -> idempotency.Outcome:
        return await service.submit(session, ctx, actor, form, now)

    return await write(request, session, principal, action, key=key, canonical_body=body.model_dump_json())


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
    today = local_date(current_time(request), context(request).settings.timezone)
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
    today = local_date(current_time(request), context(request).settings.timezone)
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
    ctx, now, actor = context(request), current_time(request), actor_of(principal)

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

    return await write(request, session, principal, action, key=key, canonical_body=body.model_dump_json())


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise Problem(
            400, "Invalid If-Match", 'Send the version you read, e.g. If-Match: "3".', reason="bad_if_match"
        )
    return int(value)


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
    ctx, now, actor = context(request), current_time(request), actor_of(principal)
    comment = body.comment if body else None
    return await write(
        request, session, principal, lambda: service.withdraw(session, ctx, actor, request_id, comment, now)
    )


@router.post("/access-requests/{request_id}/comments", status_code=201, responses={403: {}, 404: {}})
async def comment(
    request_id: RequestId, body: CommentIn, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> JSONResponse:
    """A message in the request's thread, between the partner and the department's CAF."""
    ctx, now, actor = context(request), current_time(request), actor_of(principal)
    return await write(
        request,
        session,
        principal,
        lambda: service.add_comment(session, ctx, actor, request_id, body.text, now),
    )
