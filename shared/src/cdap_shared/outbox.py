"""Transactional outbox: an event is written in the same database transaction as the state it reports.

`add()` inserts the row in the caller's session; the relay (`cdap_shared.relay`) publishes it later.
The trace context current at `add()` time is stored with the row, so the consumer's span is a child of
the request that caused the event, however long the row waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import NamedTuple

import asyncpg
from opentelemetry import propagate
from opentelemetry.trace import SpanContext
from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from cdap_shared.envelope import KAFKA_HEADERS, CloudEvent
from cdap_shared.events import EventData, make_event, topic_for
from cdap_shared.hotpool import HotPool
from cdap_shared.topics import named

NOTIFY_CHANNEL = "cdap_outbox"


class OutboxRecord(SQLModel, table=True):
    """An event waiting to be (or already) published; `id` order is publication order."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    event_id: str = Field(max_length=64, unique=True)
    event_type: str = Field(max_length=100)
    topic: str = Field(max_length=100)
    key: str = Field(max_length=200)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    )
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


def current_trace_headers() -> dict[str, str]:
    """W3C `traceparent` (and `tracestate`) of the span current in this task, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


# One round trip stages the row and its notification (delivered at commit, and only then: the relay
# wakes at once instead of at its next poll; PostgreSQL folds identical notifications).
_COLUMNS = ("event_id", "event_type", "topic", "key", "payload", "headers")
_INSERT_TEMPLATE = (
    "INSERT INTO outbox (event_id, event_type, topic, key, payload, headers) "
    "VALUES ({}, {}, {}, {}, {}, CAST({} AS jsonb))"
)
_NAMED = [f":{c}" for c in _COLUMNS]  # SQLAlchemy's placeholders
_STAGE = text(  # the channel is NOTIFY_CHANNEL; only constants are interpolated
    f"WITH staged AS ({_INSERT_TEMPLATE.format(*_NAMED)} RETURNING 1) "  # noqa: S608
    "SELECT pg_notify('cdap_outbox', '') FROM staged"
)


def _headers() -> str:
    """The record headers of an event staged now: the CloudEvents binding's and the current trace's."""
    return json.dumps(KAFKA_HEADERS | current_trace_headers())


def _row(
    event: CloudEvent, key: str | None, topic: str | None, headers: str
) -> tuple[str, str, str, str, bytes, str]:
    return (
        event.id,
        event.type,
        topic or named(topic_for(event.type)),
        key or event.subject,
        event.to_bytes(),
        headers,
    )


async def add(
    session: AsyncSession, event: CloudEvent, *, key: str | None = None, topic: str | None = None
) -> str:
    """Stage `event` in the caller's transaction; it is published only if that transaction commits.

    The key defaults to the event's subject and the topic to the one its type belongs to. A plain SQL
    statement rather than an ORM object: this runs on every lookup, and the unit of work costs more
    than the insert itself. Returns the event id.
    """
    await session.execute(_STAGE, dict(zip(_COLUMNS, _row(event, key, topic, _headers()), strict=True)))
    return event.id


# One statement for a whole transaction's events, whatever their number, and its notification with it
# (on NOTIFY_CHANNEL).
# `WITH ORDINALITY ... ORDER BY` hands the rows to the insert in list order, so ids (the publication
# order) follow it: the relay publishes a transaction's events in the order they were staged.
_STAGE_MANY = text(
    "WITH staged AS (INSERT INTO outbox (event_id, event_type, topic, key, payload, headers) "
    "SELECT event_id, event_type, topic, key, payload, CAST(:headers AS jsonb) FROM unnest("
    "CAST(:event_ids AS varchar[]), CAST(:event_types AS varchar[]), CAST(:topics AS varchar[]), "
    "CAST(:keys AS varchar[]), CAST(:payloads AS bytea[])) WITH ORDINALITY "
    "AS staging(event_id, event_type, topic, key, payload, position) ORDER BY position RETURNING 1) "
    "SELECT pg_notify(:channel, '') FROM (SELECT FROM staged LIMIT 1) AS one"
)


async def add_all(session: AsyncSession, events: list[CloudEvent], *, topic: str | None = None) -> None:
    """`add` for a transaction that stages many events: one statement inserts them all and notifies."""
    if not events:
        return
    headers = _headers()  # one transaction, one trace: the same headers for every event
    rows = [_row(event, None, topic, headers) for event in events]
    event_ids, event_types, topics, keys, payloads, _ = (list(column) for column in zip(*rows, strict=True))
    await session.execute(
        _STAGE_MANY,
        {
            "event_ids": event_ids,
            "event_types": event_types,
            "topics": topics,
            "keys": keys,
            "payloads": payloads,
            "headers": headers,
            "channel": NOTIFY_CHANNEL,
        },
    )


# The hot path's insert has no notification: NOTIFY takes a database-wide lock from the commit until its
# WAL flush is done, so every notifying commit waits for the one before it (lookups lost half their
# throughput to it). The relays of this process are woken directly instead (`waking`), and poll besides.
_INSERT_SQL = _INSERT_TEMPLATE.format(*(f"${i}" for i in range(1, 7)))

_relays: list[Callable[[], None]] = []  # how to wake each relay this process runs (in it or in a child)


@contextlib.contextmanager
def waking(wake: Callable[[], None]) -> Iterator[None]:
    """While inside, `wake()` is called each time `add_pg` or `GroupAppend` commits rows: a relay of this
    process is told at once, without PostgreSQL, rather than finding the row at its next poll. `wake`
    must be cheap and never raise (it runs on the lookup's path, after the commit)."""
    _relays.append(wake)
    try:
        yield
    finally:
        _relays.remove(wake)


def _committed(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:  # type: ignore[type-arg]
    """After a staging statement: wake the relays if it committed (outside a transaction). A row staged
    in a transaction still open is found at the relay's next poll."""
    if not conn.is_in_transaction():
        for wake in _relays:
            wake()


async def add_pg(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,  # type: ignore[type-arg]
    event: CloudEvent,
    *,
    key: str | None = None,
    topic: str | None = None,
) -> str:
    """`add` for a raw asyncpg connection (the lookup hot path uses one), in its transaction if it has
    one; without a notification: outside a transaction, the relays of this process are woken (`waking`),
    in one they find the row at their next poll."""
    await conn.execute(_INSERT_SQL, *_row(event, key, topic, _headers()))
    _committed(conn)
    return event.id


def traceparent(span: SpanContext) -> str:
    """The W3C `traceparent` of `span`, written directly: the propagator's `inject` costs several times
    more, on paths that run once per event (the relay, dossiers' lookup)."""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"


def span_headers(span: SpanContext) -> str:
    """`_headers()` for a caller that already holds the current span's context: its `traceparent` (and
    `tracestate`) written directly, without the propagator's `inject`."""
    if not span.is_valid:
        return _PLAIN_HEADERS
    carrier = KAFKA_HEADERS | {"traceparent": traceparent(span)}
    if span.trace_state:
        carrier["tracestate"] = span.trace_state.to_header()
    return json.dumps(carrier)


_PLAIN_HEADERS = json.dumps(KAFKA_HEADERS)


# Rows of concurrent callers appended by one statement, in their callers' order (`GroupAppend`);
# prepared on each of its connections (`prepare_group_append`).
GROUP_APPEND_SQL = (
    "INSERT INTO outbox (event_id, event_type, topic, key, payload, headers) "
    "SELECT event_id, event_type, topic, key, payload, CAST(headers AS jsonb) FROM unnest("
    "$1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bytea[], $6::text[]) WITH ORDINALITY "
    "AS staging(event_id, event_type, topic, key, payload, headers, position) ORDER BY position"
)


class Staged(NamedTuple):
    """An event its caller serialised itself, for `GroupAppend.append`: `payload` is its structured-mode
    JSON body, `headers` its record headers (`span_headers`)."""

    event_id: str
    event_type: str
    key: str
    payload: bytes
    headers: str


_Waiting = tuple[Staged, asyncio.Future[None]]


class GroupAppend:
    """Outbox rows of concurrent requests appended together: the first caller's row goes at once, and
    the rows that arrive while a statement runs go in the next one. Each statement commits on its own
    (no transaction is open), so a caller's `append` returns only once its row has committed. A statement
    that a row's content fails is retried row by row, so that row fails its own caller only; any other
    failure (the database is unreachable) fails every caller of the statement at once.

    One statement (and one commit, one WAL flush) serves many lookups under load, on a connection of its
    own (`pool`, size 1: the rows never wait behind lookups for a connection)."""

    def __init__(self, pool: HotPool, max_rows: int = 500) -> None:
        self.pool = pool
        self.max_rows = max_rows
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, staged: Staged) -> None:
        """Stage one event; returns once its row has committed, raises what refused it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((staged, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.max_rows], self._waiting[self.max_rows :]
                await self._append_batch(batch)
        except BaseException:  # cancelled (the service stops): so are its callers
            for _, done in [*batch, *self._waiting]:
                done.cancel()
            raise
        finally:
            self._writer = None

    async def _append_batch(self, batch: list[_Waiting]) -> None:
        try:
            await self._insert(batch)
        except Exception as exc:
            if len(batch) == 1 or not _refuses_a_row(exc):
                _settle(batch, exc)  # an outage: every caller fails now (a 503), none waits on
                return
            for one in batch:
                try:
                    await self._insert([one])
                except Exception as refused:
                    _settle([one], refused)

    async def _insert(self, batch: list[_Waiting]) -> None:
        """One statement for `batch`; once it has committed, the relays are woken and the callers told."""
        rows = [staged for staged, _ in batch]
        async with self.pool.acquire() as conn:
            await conn.execute(
                GROUP_APPEND_SQL,
                [row.event_id for row in rows],
                [row.event_type for row in rows],
                [named(topic_for(row.event_type)) for row in rows],
                [row.key for row in rows],
                [row.payload for row in rows],
                [row.headers for row in rows],
            )
            _committed(conn)
        _settle(batch, None)


def _refuses_a_row(exc: Exception) -> bool:
    """Whether the database refused a row's content (SQLSTATE classes 22, data exception, and 23,
    integrity constraint violation) rather than the statement as a whole (an outage, a timeout)."""
    return isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "")[:2] in {"22", "23"}


def _settle(batch: list[_Waiting], error: Exception | None) -> None:
    """Tell the callers of `batch` (those still waiting) that their rows committed, or what refused them."""
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


async def prepare_group_append(conn: asyncpg.Connection) -> None:
    """`HotPool`'s `prepare` for `GroupAppend`'s connection: its statement parsed once, nothing written."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(GROUP_APPEND_SQL, [], [], [], [], [], [])
    finally:
        await transaction.rollback()


async def emit(
    session: AsyncSession,
    event_type: str,
    *,
    source: str,
    subject: str,
    data: EventData,
    topic: str | None = None,
) -> CloudEvent:
    """Build the event for `data` and stage it in the caller's transaction; returns the event."""
    event = make_event(event_type, source=source, subject=subject, data=data)
    await add(session, event, topic=topic)
    return event
