"""Read side: entries and alerts, keyset-paginated on their position (never OFFSET), with the names
of their actor and organisation joined from the directory (`directory.py`) as they are read.

The cursor is the position of the last item returned (a leaf index, or an alert id) written in
decimal: documented, so a client may also start anywhere (`cdap audit tail` starts at the end).
Every filter has an index that ends with the leaf index, so "actor = X ORDER BY leaf_index" reads
one index range per partition however large the log is.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import directory
from cdap_audit.domain import UnknownAlert, UnknownEntry, format_time
from cdap_audit.models import AlertRecord, AlertReview, Entry

ENTRY = Entry.__table__  # type: ignore[attr-defined]
ALERT = AlertRecord.__table__  # type: ignore[attr-defined]
REVIEW = AlertReview.__table__  # type: ignore[attr-defined]
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class EntryFilter:
    actor: str | None = None
    dossier: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    trace_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def body(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def entry_item(row: Any) -> dict[str, Any]:
    """The API shape of an entry; `leaf` is base64 of the exact bytes whose leaf hash is in the tree."""
    return {
        "index": row.leaf_index,
        "event_id": row.event_id,
        "type": row.type,
        "time": format_time(row.time),
        "actor": row.actor,
        "organisation_id": row.organisation_id,
        "profile": row.profile,
        "subject": row.subject,
        "decision": row.decision,
        "reason": row.reason,
        "motif": row.motif,
        "sections": row.sections,
        "client_ip": row.client_ip,
        "trace_id": row.trace_id,
        "leaf": base64.b64encode(row.leaf).decode(),
    }


def _entry_columns() -> list[Any]:
    return [c for c in ENTRY.c if c.name not in ("recorded_at", "source")]


async def _page(session: AsyncSession, query: Select[Any], limit: int) -> tuple[list[Any], bool]:
    rows = list((await session.execute(query.limit(limit + 1))).all())
    return rows[:limit], len(rows) > limit


def _keyset(query: Select[Any], key: Any, cursor: int | None, order: Order) -> Select[Any]:
    if cursor is not None:
        query = query.where(key > cursor if order == "asc" else key < cursor)
    return query.order_by(key.asc() if order == "asc" else key.desc())


def _actor_is(column: ColumnElement[Any], actor: str) -> ColumnElement[bool]:
    """`actor` is an account's id, or a person's e-mail (ids never hold an `@`): then the actor is any
    of that address's accounts, as the directory knows them."""
    if "@" in actor:
        return column.in_(directory.accounts_of(actor))
    return column == actor


async def entries(
    session: AsyncSession, where: EntryFilter, cursor: int | None, limit: int, order: Order = "asc"
) -> Page:
    query = select(*_entry_columns())
    if where.actor is not None:
        query = query.where(_actor_is(ENTRY.c.actor, where.actor))
    for column, value in (
        (ENTRY.c.dossier, where.dossier),
        (ENTRY.c.type, where.type),
        (ENTRY.c.trace_id, where.trace_id),
        (ENTRY.c.event_id, where.event_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(ENTRY.c.time >= where.since)
    if where.until is not None:
        query = query.where(ENTRY.c.time < where.until)
    key = ENTRY.c.leaf_index
    rows, more = await _page(session, _keyset(query, key, cursor, order), limit)
    items = await directory.with_names(session, [entry_item(r) for r in rows])
    return Page(items, str(items[-1]["index"]) if more else None)


async def entry_at(session: AsyncSession, index: int) -> dict[str, Any]:
    """One entry by its leaf position, with names; `UnknownEntry` if beyond the tree or purged."""
    row = (await session.execute(select(*_entry_columns()).where(ENTRY.c.leaf_index == index))).first()
    if row is None:
        raise UnknownEntry(index)
    return (await directory.with_names(session, [entry_item(row)]))[0]


def _moment(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def alert_item(row: Any) -> dict[str, Any]:
    """The API shape of an alert with its review (no review yet: open)."""
    return {
        "id": row.id,
        "alert_id": row.alert_id,
        "rule": row.rule,
        "severity": row.severity,
        "actor": row.actor,
        "organisation_id": row.organisation_id,
        "detail": row.detail,
        "entry_index": row.entry_index,
        "event_time": format_time(row.event_time),
        "raised_at": format_time(row.raised_at),
        "state": row.state or "open",
        "acknowledged_by": row.acknowledged_by,
        "acknowledged_at": _moment(row.acknowledged_at),
        "acknowledgement": row.acknowledgement,
        "closed_by": row.closed_by,
        "closed_at": _moment(row.closed_at),
        "closing_comment": row.closing_comment,
    }


def _alerts_query() -> Select[Any]:
    reviewed = [c for c in REVIEW.c if c.name not in ("alert_id", "mailed_at")]
    return select(ALERT, *reviewed).outerjoin(REVIEW, REVIEW.c.alert_id == ALERT.c.alert_id)


async def alerts(
    session: AsyncSession,
    *,
    actor: str | None,
    rule: str | None,
    severity: str | None,
    state: str | None = None,
    cursor: int | None,
    limit: int,
    order: Order = "asc",
) -> Page:
    query = _alerts_query()
    if actor is not None:
        query = query.where(_actor_is(ALERT.c.actor, actor))
    for column, value in ((ALERT.c.rule, rule), (ALERT.c.severity, severity)):
        if value is not None:
            query = query.where(column == value)
    if state == "open":
        query = query.where(REVIEW.c.state.is_(None) | (REVIEW.c.state == "open"))
    elif state is not None:
        query = query.where(REVIEW.c.state == state)
    key = ALERT.c.id
    rows, more = await _page(session, _keyset(query, key, cursor, order), limit)
    items = await directory.with_names(session, [alert_item(r) for r in rows])
    return Page(items, str(items[-1]["id"]) if more else None)


async def alert(session: AsyncSession, alert_id: str) -> dict[str, Any]:
    """One alert by its id, with its review and names; `UnknownAlert` if there is none."""
    row = (await session.execute(_alerts_query().where(ALERT.c.alert_id == alert_id))).first()
    if row is None:
        raise UnknownAlert(alert_id)
    return (await directory.with_names(session, [alert_item(row)]))[0]
