"""HTTP entrypoints of the audit service (auditor role only): thin, they call `queries` and `ledger`."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import ledger, queries, reviews, signing, stream
from cdap_audit.domain import CommentRequired, InvalidTransition, ReviewAction
from cdap_audit.merkle import MissingNodeError
from cdap_audit.models import CheckpointRecord
from cdap_audit.queries import EntryFilter, Order
from cdap_audit.schemas import (
    AlertItem,
    AlertPage,
    CheckpointBody,
    ConsistencyProof,
    EntryItem,
    EntryPage,
    InclusionProof,
    Review,
)
from cdap_shared.auth import CurrentPrincipal, require_roles
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])

MAX_POSITION = 2**62  # far beyond any log, and below PostgreSQL's bigint limit
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]
Cursor = Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="`next_cursor` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=1000)]
OrderQuery = Annotated[Order, Query(description="by position: asc (log order) or desc (newest first)")]
Numero = Annotated[str, Path(pattern=r"^\d{7}$", description="numéro allocataire (7 digits)")]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Actor = Annotated[
    str | None,
    Query(
        min_length=1, max_length=254, description="an account's id, or a person's e-mail (all its accounts)"
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {400: {}, 401: {}, 403: {}, 422: {}}


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC (the log's own times are all UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _damaged() -> Problem:
    """Not the caller's fault: a node of a committed size is gone, which only tampering explains."""
    return Problem(500, "Log damaged", "A Merkle node the proof needs is missing from the store.")


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def entry_filter(
    actor: Actor = None,
    dossier: Annotated[str | None, Query(pattern=r"^\d{7}$")] = None,
    type: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z]+(\.[a-z_]+)+$")] = None,
    since: Annotated[datetime | None, Query(alias="from", description="event time, inclusive")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="event time, exclusive")] = None,
    trace_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    event_id: Text = None,
) -> EntryFilter:
    """The entry filters, shared by the list and the stream."""
    since, until = _utc(since), _utc(until)
    if since and until and since > until:
        raise Problem(400, "Invalid time range", "`from` is after `to`.")
    return EntryFilter(actor, dossier, type, since, until, trace_id, event_id)


Filters = Annotated[EntryFilter, Depends(entry_filter)]


@router.get("/entries", response_model=EntryPage, responses=ERRORS)
async def list_entries(
    session: SessionDep,
    where: Filters,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = "asc",
) -> dict[str, Any]:
    """Log entries matching every filter given, by position; `leaf` holds the exact hashed bytes."""
    page = await queries.entries(session, where, int(cursor) if cursor else None, limit, order)
    return page.body()


@router.get(
    "/entries/stream",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "SSE, one event per entry"},
    },
)
async def stream_entries(
    request: Request,
    where: Filters,
    from_index: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="first index sent")] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^\d{1,18}$")] = None,
) -> StreamingResponse:
    """New entries matching the filters as Server-Sent Events (`id` = index, `data` = the entry as listed).

    Starts after `Last-Event-ID` (a reconnecting client), else at `from_index`, else at the end of the
    log; comment lines every 15 s when idle; ends after 10 minutes, to be resumed with `Last-Event-ID`.
    """
    after: int | None = None  # from now on
    if last_event_id is not None:
        after = int(last_event_id)
    elif from_index is not None:
        after = from_index - 1  # -1 for the whole log: the keyset is "index > after"
    settings = request.app.state.settings
    events = stream.entry_events(
        request.app.state.sessions,
        request.app.state.watcher,
        where,
        after,
        heartbeat=settings.stream_heartbeat_seconds,
        lifetime=settings.stream_lifetime_seconds,
    )
    # no-transform and X-Accel-Buffering: proxies must pass each event on as it comes, not buffer it.
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


@router.get("/entries/{index}", response_model=EntryItem, responses={**ERRORS, 404: {}})
async def get_entry(
    index: Annotated[int, Path(ge=0, le=MAX_POSITION)], session: SessionDep
) -> dict[str, Any]:
    """One entry by its leaf position (404 if beyond the tree or purged by retention)."""
    item = await queries.entry_at(session, index)
    if item is None:
        raise Problem(404, "No such entry", f"No entry at index {index} (beyond the log, or purged).")
    return item


@router.get("/dossiers/{numero}/consultations", response_model=EntryPage, responses=ERRORS)
async def dossier_consultations(
    numero: Numero, session: SessionDep, cursor: Cursor = None, limit: Limit = 100, order: OrderQuery = "asc"
) -> dict[str, Any]:
    """Who consulted this dossier (granted, denied, rate-limited and unknown-numero lookups)."""
    where = EntryFilter(dossier=numero)
    return (await queries.entries(session, where, int(cursor) if cursor else None, limit, order)).body()


@router.get("/alerts", response_model=AlertPage, responses=ERRORS)
async def list_alerts(
    session: SessionDep,
    actor: Actor = None,
    rule: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,49}$")] = None,
    severity: Annotated[str | None, Query(pattern=r"^(info|warning|critical)$")] = None,
    state: Annotated[str | None, Query(pattern=r"^(open|acknowledged|closed)$")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = "asc",
) -> dict[str, Any]:
    """Alerts raised by the rules with their state, oldest first by default."""
    page = await queries.alerts(
        session,
        actor=actor,
        rule=rule,
        severity=severity,
        state=state,
        cursor=int(cursor) if cursor else None,
        limit=limit,
        order=order,
    )
    return page.body()


AlertId = Annotated[str, Path(pattern=r"^[0-9A-Za-z-]{1,64}$", description="`alert_id` of the alert")]


@router.get("/alerts/{alert_id}", response_model=AlertItem, responses={**ERRORS, 404: {}})
async def get_alert(alert_id: AlertId, session: SessionDep) -> dict[str, Any]:
    """One alert, with its state and the auditors' comments."""
    item = await queries.alert(session, alert_id)
    if item is None:
        raise Problem(404, "No such alert", f"No alert {alert_id}.")
    return item


REVIEW_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 404: {}, 409: {}}


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertItem, responses=REVIEW_ERRORS)
async def acknowledge_alert(
    request: Request, session: SessionDep, principal: CurrentPrincipal, alert_id: AlertId, body: Review
) -> dict[str, Any]:
    """Acknowledge an open alert, saying in a comment what is being done; 409 otherwise.
    Logged as `audit.alert.acknowledged` (who and which alert, not the comment)."""
    return await _review(request, session, principal.sub, alert_id, "acknowledge", body.comment)


@router.post("/alerts/{alert_id}/close", response_model=AlertItem, responses=REVIEW_ERRORS)
async def close_alert(
    request: Request, session: SessionDep, principal: CurrentPrincipal, alert_id: AlertId, body: Review
) -> dict[str, Any]:
    """Close an open or acknowledged alert; 409 otherwise. Logged as `audit.alert.closed`."""
    return await _review(request, session, principal.sub, alert_id, "close", body.comment)


async def _review(
    request: Request,
    session: AsyncSession,
    by: str,
    alert_id: str,
    action: ReviewAction,
    comment: str | None,
) -> dict[str, Any]:
    try:
        async with session.begin():
            await reviews.review(
                session,
                alert_id,
                action,
                by=by,
                comment=comment,
                topic=request.app.state.settings.alerts_topic,
                now=datetime.now(UTC),
            )
    except reviews.UnknownAlert as exc:
        raise Problem(404, "No such alert", f"No alert {alert_id}.") from exc
    except CommentRequired as exc:
        raise Problem(422, "Comment required", str(exc), reason="comment_required") from exc
    except InvalidTransition as exc:
        raise Problem(409, "Invalid transition", str(exc), reason="invalid_transition") from exc
    item = await queries.alert(session, alert_id)
    if item is None:  # reviewed a moment ago, so only a concurrent purge could get here
        raise Problem(404, "No such alert", f"No alert {alert_id}.")
    return item


@router.get(
    "/checkpoints/latest",
    response_model=CheckpointBody,
    responses={**ERRORS, 404: {}, 200: {"content": {"text/plain": {}}}},
)
async def latest_checkpoint(request: Request, session: SessionDep) -> Response:
    """The newest signed checkpoint: the C2SP signed note as text, or JSON with `Accept: application/json`."""
    record = await signing.latest(session)
    if record is None:
        raise Problem(404, "No checkpoint yet", "The first checkpoint is signed within seconds of start.")
    return _checkpoint(request, record)


def _checkpoint(request: Request, record: CheckpointRecord) -> Response:
    if _wants_json(request):
        body = CheckpointBody(
            origin=record.origin,
            tree_size=record.tree_size,
            root_hash=base64.b64encode(record.root_hash).decode(),
            note=record.note,
        )
        return JSONResponse(body.model_dump())
    return PlainTextResponse(record.note)


KEY_NAME = re.compile(r"[^\s+\x00-\x1f\x7f]{1,200}")  # signed-note key names
WitnessName = Annotated[list[str] | None, Query(max_length=10, description="key names of witnesses")]


@router.get(
    "/checkpoints/witnessed",
    response_model=CheckpointBody,
    responses={**ERRORS, 404: {}, 200: {"content": {"text/plain": {}}}},
)
async def witnessed_checkpoint(
    request: Request, session: SessionDep, witness: WitnessName = None
) -> Response:
    """The newest checkpoint cosigned by every `witness` named (default: by any configured witness)."""
    if witness and not all(KEY_NAME.fullmatch(name) for name in witness):
        raise Problem(400, "Invalid witness name", "A key name has no spaces, '+' or control characters.")
    configured = [w.name for w in request.app.state.witnesses]
    names = witness or configured
    if not names:
        raise Problem(404, "No witness configured", "Set CDAP_AUDIT_WITNESS_KEYS to accept cosignatures.")
    if witness is None:
        records = [await signing.latest_witnessed(session, [name]) for name in configured]
        record = max((r for r in records if r), key=lambda r: r.tree_size, default=None)
    else:
        record = await signing.latest_witnessed(session, names)
    if record is None:
        raise Problem(404, "Not witnessed yet", "No checkpoint carries a cosignature of these witnesses yet.")
    return _checkpoint(request, record)


@router.get("/checkpoints/key", responses={**ERRORS, 200: {"content": {"text/plain": {}}}})
async def checkpoint_key(request: Request) -> Response:
    """The note verifier key `<name>+<key id>+<base64 key>` that checks every checkpoint."""
    try:
        key = (await request.app.state.tasks.get_signer()).verifier_key
    except (SQLAlchemyError, OSError) as exc:  # first use, and the database is down
        raise Problem(503, "Key unavailable", "The signing key could not be loaded; retry.") from exc
    return JSONResponse({"key": key}) if _wants_json(request) else PlainTextResponse(key + "\n")


@router.get("/proofs/inclusion", response_model=InclusionProof, responses=ERRORS)
async def inclusion_proof(index: Position, tree_size: Position, session: SessionDep) -> dict[str, Any]:
    """RFC 9162 §2.1.3 audit path of leaf `index` in the tree of `tree_size` leaves."""
    size = await ledger.committed_size(session)
    if not index < tree_size <= size:
        raise Problem(400, "Invalid proof request", f"Need index < tree_size <= {size} (the log's size).")
    try:
        hashes = await ledger.inclusion(session, index, tree_size)
    except MissingNodeError as exc:
        raise _damaged() from exc
    return {"index": index, "tree_size": tree_size, "hashes": _b64(hashes)}


@router.get("/proofs/consistency", response_model=ConsistencyProof, responses=ERRORS)
async def consistency_proof(first: Position, second: Position, session: SessionDep) -> dict[str, Any]:
    """RFC 9162 §2.1.4 proof that the tree of `first` leaves is a prefix of the tree of `second`."""
    size = await ledger.committed_size(session)
    if not first <= second <= size:
        raise Problem(400, "Invalid proof request", f"Need first <= second <= {size} (the log's size).")
    try:
        hashes = await ledger.consistency(session, first, second)
    except MissingNodeError as exc:
        raise _damaged() from exc
    return {"first": first, "second": second, "hashes": _b64(hashes)}


# Witnesses have no account: a cosignature by a key of `CDAP_AUDIT_WITNESS_KEYS` is what authenticates
# them, and all they can do is add such a line to a checkpoint signed here.
witness_router = APIRouter(prefix="/v1", tags=["audit"])


# A checkpoint as served (origin, tree size, root hash, the log's signature) with a witness's cosignature.
COSIGNED_NOTE = (
    "cdap.audit/compose\n1024\nKgKpjlqSmJ8Z0o8Tq3l9o6QkRkKq5P0n0UQz3wA2eXY=\n\n"
    "\u2014 cdap.audit/compose 3Fq1dQAAAAGZk0v9m3d6q1b2YxTn0wq4A0P7q2n8mZ6s8k1cQ9tH5r0xL2u3Yg==\n"
    "\u2014 witness.caf.example 7cC2bQAAAABnTQ7fq9k2m4ZB1bX3hJ6s0o9lV2cR8yT4wE5uI7pK0aN3dF6gH1jS2qW==\n"
)


@witness_router.post(
    "/checkpoints/cosignatures",
    responses={400: {}, 403: {}, 404: {}, 413: {}, 200: {"content": {"text/plain": {}}}},
    openapi_extra={"requestBody": {"content": {"text/plain": {"example": COSIGNED_NOTE}}, "required": True}},
)
async def add_cosignatures(request: Request) -> Response:
    """A witness submits a checkpoint signed here with its cosignature line(s); answers the note as served."""
    body = await request.body()
    try:
        note = await signing.add_cosignatures(
            request.app.state.sessions, body.decode("utf-8"), request.app.state.witnesses
        )
    except UnicodeDecodeError as exc:
        raise Problem(400, "Not a signed note", "The body is not UTF-8 text.") from exc
    except signing.CosignatureRejected as exc:
        title = {400: "Not a signed note", 403: "Cosignature refused", 404: "Unknown checkpoint"}
        raise Problem(exc.status, title[exc.status], str(exc)) from exc
    return PlainTextResponse(note)
