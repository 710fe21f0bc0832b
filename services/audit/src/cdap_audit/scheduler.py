"""Background work of a running audit service: signing checkpoints, mailing alerts, hourly maintenance.

Each job is one pass (what tests may call); `jobs()` gives the `cdap_shared.periodic.Periodic`s that
run them for the app's lifespan. A failed pass (a database restart) is logged and retried at the next
tick: an outage never stops the signing.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Gauge
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cdap_audit import partitions, reviews, signing
from cdap_audit.config import Settings
from cdap_audit.models import RuleCounter
from cdap_audit.rules import RuleSet
from cdap_audit.signing import CheckpointKey
from cdap_shared.periodic import Periodic

log = structlog.get_logger(__name__)

CHECKPOINT_SIZE = Gauge("cdap_audit_checkpoint_tree_size", "Tree size of the last checkpoint signed here")
MAINTENANCE_INTERVAL = 3600.0
# Window counters are kept this much longer than the longest window, so a backlog consumed after
# an outage is still counted against the events that preceded it.
ACTIVITY_MARGIN = timedelta(hours=6)


async def sign(sessions: async_sessionmaker[AsyncSession], key: CheckpointKey, settings: Settings) -> None:
    """Sign the committed tree if it grew since the last checkpoint."""
    record = await signing.sign_if_grown(
        sessions, await key.signer(), settings.audit_origin, settings.checkpoints_topic
    )
    if record is not None:
        CHECKPOINT_SIZE.set(record.tree_size)
        log.debug("checkpoint signed", tree_size=record.tree_size)


async def notify(sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime) -> None:
    """Critical alerts mailed at once; the day's digest of warnings once its hour has come."""
    async with sessions() as session, session.begin():
        await reviews.notify_new(session, portal_url=settings.portal_url, now=now)
    async with sessions() as session, session.begin():
        await reviews.send_digest(
            session, hour=settings.alert_digest_hour, portal_url=settings.portal_url, now=now
        )


async def maintain(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    rules: RuleSet,
    now: datetime,
) -> None:
    """Partitions ahead, window counters trimmed (the outbox is the shared housekeeping's)."""
    await partitions.ensure(engine, ahead=settings.partitions_ahead)
    horizon = now - rules.longest_window() - ACTIVITY_MARGIN
    async with sessions() as session, session.begin():
        table = RuleCounter.__table__  # type: ignore[attr-defined]
        await session.execute(delete(table).where(table.c.minute < horizon))


def jobs(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    rules: RuleSet,
    key: CheckpointKey,
    committed: asyncio.Event,
) -> list[Periodic]:
    """The three jobs at the real time: signing as soon as a batch has committed (`committed`, set by
    the ingestion) but at most once per `checkpoint_min_gap`, and at least every `checkpoint_interval`
    otherwise; the notifier every `alert_notify_seconds`; maintenance hourly."""

    async def signing_pass() -> None:
        # Sign, then wait for a batch to commit here, `checkpoint_interval` at most (another replica may
        # have appended); the Periodic then waits out the rest of the gap. So an entry committed here is
        # signed within about one gap, a busy log once per gap, not once per batch, and a log where
        # nothing new is committed not at all (`sign_if_grown` finds it has not grown).
        committed.clear()
        await sign(sessions, key, settings)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(committed.wait(), settings.checkpoint_interval)

    async def notify_pass() -> None:
        await notify(sessions, settings, datetime.now(UTC))

    async def maintenance_pass() -> None:
        await maintain(engine, sessions, settings, rules, datetime.now(UTC))

    return [
        Periodic("checkpoints", signing_pass, settings.checkpoint_min_gap),
        Periodic("notify", notify_pass, settings.alert_notify_seconds),
        Periodic("maintenance", maintenance_pass, MAINTENANCE_INTERVAL),
    ]
