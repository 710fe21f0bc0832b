"""Routes of the access requests: submit, the queue, one request, decisions, withdrawal, comments."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from cdap_access import idempotency, queries
from cdap_access import requests as service
from cdap_access.calendar import local_date
from cdap_access.domain import State
from cdap_access.queries import QueueKey
from cdap_access.requests import Submission
from cdap_access.schemas import (
    REQUEST_DETAIL_EXAMPLE,
    CommentIn,
    DecisionIn,
    QueuePage,
    RequestState,
    SubmissionIn,
    WithdrawIn,
)
from cdap_access.web import Ctx, IdempotencyKey, RequestId, Write, summary
from cdap_shared.auth import CurrentActor, CurrentPrincipal, Principal
from cdap_shared.db import SessionDep
from cdap_shared.http import Now, example_response
from cdap_shared.paging import decode_cursor, encode_cursor
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
    body: SubmissionIn, principal: CurrentPrincipal, cmd: Write, key: IdempotencyKey = None
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

    async def action() -> idempotency.Outcome:
        return 201, summary(await service.submit(cmd.session, cmd.ctx, cmd.actor, form, cmd.now))

    return await cmd.commit(action, key=key, canonical_body=body.model_dump_json())


@router.get("/access-requests", response_model=QueuePage, responses={400: {}, 403: {}})
async def list_requests(
    actor: CurrentActor,
    ctx: Ctx,
    now: Now,
    session: SessionDep,
    department: Annotated[str | None, Query(min_length=2, max_length=3)] = None,
    state: State | None = None,
    awaiting_me: bool = False,
    q: Annotated[str | None, Query(max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The queue: requests the caller may see, oldest due date first (closed ones, with none, last).

    `awaiting_me`: only those waiting for the caller's decision (their stage, not approved by them yet);
    `q`: part of the organisation's name or the applicant's name, or the start of the SIRET. Each item
    gives its organisation's name and SIRET and, while open, `business_days_left` before the due date
    (negative: business days late); `total` counts every page."""
    page = await queries.queue(
        session,
        actor,
        today=local_date(now, ctx.settings.timezone),
        department=department,
        state=state.value if state else None,
        awaiting_me=awaiting_me,
        search=q,
        after_key=decode_cursor(cursor, queue_key) if cursor else None,
        limit=limit,
    )
    next_cursor = None
    if page.last:
        due, request_id = page.last
        next_cursor = encode_cursor([due.isoformat() if due else None, request_id])
    return {"items": page.items, "next_cursor": next_cursor, "total": page.total}


def queue_key(key: list[Any]) -> QueueKey:
    """The work list's sort key (due date, request id) read back from a cursor."""
    due, request_id = key
    return (date.fromisoformat(due) if due is not None else None), str(request_id)


@router.get(
    "/access-requests/{request_id}",
    responses={200: example_response(REQUEST_DETAIL_EXAMPLE), 403: {}, 404: {}},
)
async def get_request(
    request_id: RequestId, actor: CurrentActor, ctx: Ctx, now: Now, session: SessionDep
) -> dict[str, Any]:
    """One request with its documents and history (`at`, `actor`, `action`, `comment`)."""
    return await queries.detail(session, actor, request_id, local_date(now, ctx.settings.timezone))


@router.post(
    "/access-requests/{request_id}/decisions", response_model=RequestState, responses={403: {}, 409: {}}
)
async def decide(
    request_id: RequestId,
    body: DecisionIn,
    cmd: Write,
    key: IdempotencyKey = None,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=20)] = None,
) -> JSONResponse:
    """Approve, reject (with a reason) or request documents; the request's state says which stage.

    `If-Match: "<version>"` (the `version` last read) turns a decision on a changed request into 409.
    """
    expected = _version(if_match)

    async def action() -> idempotency.Outcome:
        row = await service.decide(
            cmd.session,
            cmd.ctx,
            cmd.actor,
            request_id,
            decision=body.decision,
            comment=body.comment,
            documents=body.documents,
            expected_version=expected,
            now=cmd.now,
        )
        return 200, summary(row)

    return await cmd.commit(action, key=key, canonical_body=body.model_dump_json())


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
async def withdraw(request_id: RequestId, cmd: Write, body: WithdrawIn | None = None) -> JSONResponse:
    """The partner administrator withdraws a request that is still open."""
    comment = body.comment if body else None

    async def action() -> idempotency.Outcome:
        return 200, summary(
            await service.withdraw(cmd.session, cmd.ctx, cmd.actor, request_id, comment, cmd.now)
        )

    return await cmd.commit(action)


@router.post("/access-requests/{request_id}/comments", status_code=201, responses={403: {}, 404: {}})
async def comment(request_id: RequestId, body: CommentIn, cmd: Write) -> JSONResponse:
    """A message in the request's thread, between the partner and the department's CAF."""

    async def action() -> idempotency.Outcome:
        entry = await service.add_comment(cmd.session, cmd.ctx, cmd.actor, request_id, body.text, cmd.now)
        return 201, {
            "at": entry.at.isoformat(),
            "actor": entry.actor,
            "action": entry.action,
            "comment": entry.comment,
        }

    return await cmd.commit(action)
