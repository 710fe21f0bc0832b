"""Idempotent consumption: the ids of handled events, written in the handler's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Column, DateTime, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel


class InboxRecord(SQLModel, table=True):
    """An event this service has already applied (or dead-lettered)."""

    __tablename__ = "inbox"

    event_id: str = Field(primary_key=True, max_length=64)
    topic: str = Field(max_length=100)
    received_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    )


async def claim(session: AsyncSession, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record `(event_id, topic)` pairs; returns the ids seen for the first time.

    Runs inside the caller's transaction: if it rolls back, the claim goes with it and the event will
    be handled again on redelivery.
    """
    if not events:
        return set()
    stmt = (
        insert(InboxRecord)
        .values([{"event_id": event_id, "topic": topic} for event_id, topic in events])
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(InboxRecord.__table__.c.event_id)  # type: ignore[attr-defined]
    )
    return set((await session.execute(stmt)).scalars())
