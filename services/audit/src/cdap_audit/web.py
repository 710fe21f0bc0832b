"""What every route of the audit service needs: the service context, the parameters its lists share, and
the one table from domain errors to HTTP ("now" is `cdap_shared.clock.Now`).

Routes parse, call a query or a use case, and map its result to a body; a domain error they let
through is answered by `PROBLEMS` (installed by `app.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_audit import domain
from cdap_audit.config import Settings
from cdap_audit.queries import EntryFilter, Order
from cdap_audit.signing import CheckpointKey
from cdap_audit.stream import TreeWatcher
from cdap_shared.problems import Problem
from cdap_shared.tlog.checkpoint import CosignerVerifier
from cdap_shared.watch import ConsumerWatch

# Domain error -> (status, title): the only place the audit service turns an error into HTTP.
PROBLEMS: dict[type[Exception], tuple[int, str]] = {
    domain.UnknownEntry: (404, "No such entry"),
    domain.UnknownAlert: (404, "No such alert"),
    domain.CommentRequired: (422, "Comment required"),
    domain.InvalidTransition: (409, "Invalid transition"),
    domain.InvalidProofRequest: (400, "Invalid proof request"),
    domain.LogDamaged: (500, "Log damaged"),
    domain.NoCheckpointYet: (404, "No checkpoint yet"),
    domain.NoWitnessConfigured: (404, "No witness configured"),
    domain.NotWitnessedYet: (404, "Not witnessed yet"),
    domain.KeyUnavailable: (503, "Key unavailable"),
    domain.NotASignedNote: (400, "Not a signed note"),
    domain.CosignatureRefused: (403, "Cosignature refused"),
    domain.UnknownCheckpoint: (404, "Unknown checkpoint"),
}


@dataclass(frozen=True)
class Context:
    """What `app.py` built for the routes besides a request's session."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    key: CheckpointKey
    witnesses: Sequence[CosignerVerifier]
    watcher: TreeWatcher
    consumers: ConsumerWatch


async def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(context)]

ERRORS: dict[int | str, dict[str, Any]] = {400: {}, 401: {}, 403: {}, 422: {}}
MAX_POSITION = 2**62  # far beyond any log, and below PostgreSQL's bigint limit
Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]
Cursor = Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="`next_cursor` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=1000)]
OrderQuery = Annotated[Order, Query(description="by position: asc (log order) or desc (newest first)")]
Text = Annotated[str | None, Query(min_length=1, max_length=200)]
Actor = Annotated[
    str | None,
    Query(
        min_length=1, max_length=254, description="an account's id, or a person's e-mail (all its accounts)"
    ),
]


def cursor_position(cursor: str | None) -> int | None:
    return int(cursor) if cursor else None


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC (the log's own times are all UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def entry_filter(
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
