"""Background work of a running audit service: signing checkpoints, mailing alerts, hourly maintenance.

Both loops survive outages (log, wait, try again): a database restart must not stop the signing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Gauge
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cdap_audit import partitions, reviews, signing
from cdap_audit.config import Settings
from cdap_audit.models import RuleCounter
from cdap_audit.rules import RuleSet
from cdap_shared.tlog.checkpoint import NoteSigner

log = structlog.get_logger(__name__)

CHECKPOINT_SIZE = Gauge("cdap_audit_checkpoint_tree_size", "Tree size of the last checkpoint signed here")
MAINTENANCE_INTERVAL = 3600.0
# Window counters are kept this much longer than the longest window, so a backlog consumed after
# an outage is still counted against the events that preceded it.
ACTIVITY_MARGIN = timedelta(hours=6)


class BackgroundTasks:
    """Owns the loops; `start()` in the app's lifespan, `stop()` when it ends."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        rules: RuleSet,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.rules = rules
        self.signer: NoteSigner | None = None
        self._stopping = asyncio.Event()
        self._grown = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def get_signer(self) -> NoteSigner:
        """The signing key (loaded, or generated, on first use)."""
        if self.signer is None:
            self.signer = await signing.stored_signer(self.sessions, self.settings.audit_origin)
        return self.signer

    def tree_grew(self) -> None:
        """Called when a batch this process appended has committed: the signing loop wakes for it."""
        self._grown.set()

    def start(self) -> None:
        signing_loop = self._every(self.settings.checkpoint_interval, self.sign_on_growth)
        self._tasks = [
            asyncio.create_task(signing_loop, name="checkpoints"),
            asyncio.create_task(self._every(self.settings.alert_notify_seconds, self.notify), name="notify"),
            asyncio.create_task(self._every(MAINTENANCE_INTERVAL, self.maintain), name="maintenance"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10)

    async def _every(self, seconds: float, work: Callable[[], Awaitable[object]]) -> None:
        """Run `work` every `seconds`, counted from each start: the work's own time does not stretch it."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await work()
            except Exception as exc:  # an outage: try again at the next tick
                log.warning("background task failed", task=work.__name__, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, started + seconds - loop.time()))

    async def sign_on_growth(self) -> None:
        """Sign, then wait for a batch to commit here, an interval at most (another replica may have
        appended). Run by `_every`: a commit is signed as soon as the last signing is an interval old,
        so an entry waits at most an interval, and a busy log is signed once per interval, not per batch."""
        self._grown.clear()
        await self.sign()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._grown.wait(), self.settings.checkpoint_interval)

    async def sign(self) -> None:
        settings = self.settings
        signer = await self.get_signer()
        record = await signing.sign_if_grown(
            self.sessions, signer, settings.audit_origin, settings.checkpoints_topic
        )
        if record is not None:
            CHECKPOINT_SIZE.set(record.tree_size)
            log.debug("checkpoint signed", tree_size=record.tree_size)

    async def notify(self) -> None:
        """Critical alerts mailed at once; the day's digest of warnings once its hour has come."""
        settings, now = self.settings, datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            await reviews.notify_new(session, portal_url=settings.portal_url, now=now)
        async with self.sessions() as session, session.begin():
            await reviews.send_digest(
                session, hour=settings.alert_digest_hour, portal_url=settings.portal_url, now=now
            )

    async def maintain(self) -> None:
        """Partitions ahead, window counters trimmed (the outbox is the shared housekeeping's)."""
        await partitions.ensure(self.engine, ahead=self.settings.partitions_ahead)
        horizon = datetime.now(UTC) - self.rules.longest_window() - ACTIVITY_MARGIN
        async with self.sessions() as session, session.begin():
            table = RuleCounter.__table__  # type: ignore[attr-defined]
            await session.execute(delete(table).where(table.c.minute < horizon))
