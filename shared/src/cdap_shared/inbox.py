"""Idempotent consumption: the ids of handled events, written in the handler's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Column, DateTime, func, text
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
    # Two array parameters rather than a VALUES row per event: the statement is the same for any batch
    # size, so building it costs nothing per event.
    params = {"ids": [event_id for event_id, _ in events], "topics": [topic for _, topic in events]}
    return set((await session.execute(_CLAIM, params)).scalars())


_CLAIM = text(
    "INSERT INTO inbox (event_id, topic) "
    "SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:topics AS varchar[])) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
