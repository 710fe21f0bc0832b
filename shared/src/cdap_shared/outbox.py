"""Transactional outbox: an event is written in the same database transaction as the state it reports.

`add()` inserts the row in the caller's session; the relay (`cdap_shared.relay`) publishes it later.
The trace context current at `add()` time is stored with the row, so the consumer's span is a child of
the request that caused the event, however long the row waits.
"""

from __future__ import annotations

import weakref
from datetime import datetime

from opentelemetry import propagate
from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from cdap_shared.envelope import CloudEvent
from cdap_shared.events import EventData, make_event, topic_for

NOTIFY_CHANNEL = "cdap_outbox"
_NOTIFIED = "cdap_outbox_notified_transaction"


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


async def add(
    session: AsyncSession, event: CloudEvent, *, key: str | None = None, topic: str | None = None
) -> OutboxRecord:
    """Stage `event` in the caller's transaction; it is published only if that transaction commits.

    The key defaults to the event's subject and the topic to the one its type belongs to.
    """
    record = OutboxRecord(
        event_id=event.id,
        event_type=event.type,
        topic=topic or topic_for(event.type),
        key=key or event.subject,
        payload=event.to_bytes(),
        headers=current_trace_headers(),
    )
    session.add(record)
    # Delivered at commit, and only then: the relay wakes at once instead of at its next poll.
    # Once per transaction is enough (PostgreSQL folds identical notifications anyway).
    transaction = session.get_transaction()
    notified = session.info.get(_NOTIFIED)
    if transaction is None or notified is None or notified() is not transaction:
        await session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        session.info[_NOTIFIED] = weakref.ref(transaction) if transaction is not None else None
    return record


async def emit(
    session: AsyncSession, event_type: str, *, source: str, subject: str, data: EventData
) -> CloudEvent:
    """Build the event for `data` and stage it in the caller's transaction; returns the event."""
    event = make_event(event_type, source=source, subject=subject, data=data)
    await add(session, event)
    return event
