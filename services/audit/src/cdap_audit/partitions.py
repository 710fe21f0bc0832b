"""Monthly partitions of `entry`, and retention.

Partitions are named `audit_partitions.entry_YYYY_MM` and cover one UTC month of `recorded_at`.
They are created ahead of time (current month plus `ahead`), at start and by the hourly
maintenance task. Should a month arrive before its partition (service down across the boundary),
its rows land in the default partition; creating the partition then moves them in, so nothing is
ever refused. Retention drops whole months older than the cut-off and deletes the rest row by row;
Merkle nodes and checkpoints are never purged, so every root and proof stays computable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

SCHEMA = "audit_partitions"
DEFAULT = f"{SCHEMA}.entry_default"
_NAME = re.compile(r"^entry_(\d{4})_(\d{2})$")
# Serialises partition changes between replicas (any constant; only this service uses it).
_LOCK = 0x0CDA_A0D1


def month_start(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def partition_name(start: datetime) -> str:
    return f"entry_{start.year:04d}_{start.month:02d}"


async def existing(conn: AsyncConnection) -> dict[str, datetime]:
    """Monthly partitions present, by name, with the month they start."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = 'public.entry'::regclass AND n.nspname = :schema"
        ),
        {"schema": SCHEMA},
    )
    found = {}
    for (name,) in rows.all():
        match = _NAME.match(name)
        if match:
            found[name] = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
    return found


async def ensure(engine: AsyncEngine, now: datetime | None = None, ahead: int = 2) -> list[str]:
    """Create the monthly partitions from `now`'s month to `ahead` months later; returns those made."""
    start = month_start(now or datetime.now(UTC))
    created = []
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        present = await existing(conn)
        for _ in range(ahead + 1):
            name = partition_name(start)
            if name not in present:
                await _create(conn, name, start, next_month(start))
                created.append(name)
            start = next_month(start)
    if created:
        log.info("entry partitions created", partitions=created)
    return created


async def _create(conn: AsyncConnection, name: str, lower: datetime, upper: datetime) -> None:
    """Create a partition for `[lower, upper)`, moving in any rows the default partition holds."""
    bounds = {"lo": lower, "hi": upper}
    # Detach/attach instead of `PARTITION OF`: the latter fails if the default partition already
    # holds rows of this month. Attaching scans the default partition, briefly blocking its inserts.
    await conn.execute(text(f"CREATE TABLE {SCHEMA}.{name} (LIKE public.entry INCLUDING DEFAULTS)"))
    # Table names are built from dates (see `partition_name`), never from input.
    table, month = f"{SCHEMA}.{name}", "recorded_at >= :lo AND recorded_at < :hi"
    await conn.execute(text(f"INSERT INTO {table} SELECT * FROM {DEFAULT} WHERE {month}"), bounds)  # noqa: S608
    await conn.execute(text(f"DELETE FROM {DEFAULT} WHERE {month}"), bounds)  # noqa: S608
    await conn.execute(
        text(
            f"ALTER TABLE public.entry ATTACH PARTITION {SCHEMA}.{name} "
            f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
        )
    )


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    dropped_partitions: list[str]
    deleted_rows: int


async def purge(engine: AsyncEngine, cutoff: datetime) -> PurgeResult:
    """Delete entries recorded before `cutoff`: whole months by dropping them, the rest by DELETE.

    Nodes, checkpoints and alerts stay: see docs/audit.md for what is still provable afterwards.
    """
    dropped = []
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        for name, start in sorted((await existing(conn)).items()):
            if next_month(start) <= cutoff:
                await conn.execute(text(f"DROP TABLE {SCHEMA}.{name}"))
                dropped.append(name)
        result = await conn.execute(text("DELETE FROM entry WHERE recorded_at < :cutoff"), {"cutoff": cutoff})
    deleted = int(getattr(result, "rowcount", 0) or 0)
    log.info("retention purge", cutoff=cutoff.isoformat(), dropped=dropped, deleted_rows=deleted)
    return PurgeResult(cutoff, dropped, deleted)
