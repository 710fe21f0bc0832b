"""When checkpoints are signed: as soon as a batch commits here, not after a whole interval, and never
while nothing new is committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from cdap_audit import ledger, scheduler, signing
from cdap_audit.config import Settings
from cdap_audit.domain import facts_from_event
from cdap_audit.rules import DEFAULT_RULES, load_rules
from cdap_shared.db import create_engine, session_factory
from cdap_shared.migrations import upgrade_to_head
from cdap_shared.periodic import Periodic
from cdap_testing import eventually

from .conftest import SERVICE_DIR, suspended

pytestmark = pytest.mark.stack


class Log:
    """An audit database with the checkpoint signer of `scheduler.jobs`, and nothing else running."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings.database_url, 2)
        self.sessions = session_factory(self.engine)
        self.committed = asyncio.Event()
        key = signing.CheckpointKey(self.sessions, settings.audit_origin, None)
        rules = load_rules(DEFAULT_RULES)
        jobs = scheduler.jobs(settings, self.engine, self.sessions, rules, key, self.committed)
        self.signer: Periodic = next(job for job in jobs if job.name == "checkpoints")
        self.frontier = ledger.Frontier(self.committed.set)  # as the ingestion wakes the signer

    async def append(self, subject: str) -> None:
        async with self.sessions() as session, session.begin():
            await ledger.append(session, [facts_from_event(suspended(subject))], self.frontier)

    async def signed_sizes(self) -> list[int]:
        async with self.sessions() as session:
            rows = await session.execute(signing.CHECKPOINT.select().order_by(signing.CHECKPOINT.c.id))
            return [row.tree_size for row in rows]


@pytest.fixture
async def make_log(
    stack: dict[str, str], make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Callable[..., Awaitable[Log]]]:
    opened: list[Log] = []

    async def make(**settings: Any) -> Log:
        url = await make_database()
        await upgrade_to_head(SERVICE_DIR, url)
        log = Log(Settings(database_url=url, kafka_bootstrap=stack["kafka"]).model_copy(update=settings))
        opened.append(log)
        return log

    yield make
    for log in opened:
        await log.signer.stop()
        await log.engine.dispose()


async def test_an_entry_committed_here_is_signed_without_waiting_for_the_interval(
    make_log: Callable[..., Awaitable[Log]],
) -> None:
    """The interval is an hour here (past the setting's bound, so no look at the tree comes during the
    test): only the commit's wake-up can get the new entry signed."""
    log = await make_log(checkpoint_interval=3600.0, checkpoint_min_gap=0.05)
    log.signer.start()
    assert await eventually(log.signed_sizes) == [0]  # the empty tree, at first start
    await log.append("first")
    assert await eventually(lambda: _covers(log, 1)) == [0, 1]
    await log.append("second")
    assert await eventually(lambda: _covers(log, 2)) == [0, 1, 2]


async def test_nothing_is_signed_while_nothing_new_is_committed(
    make_log: Callable[..., Awaitable[Log]],
) -> None:
    """Passes that find the tree as it was (woken by a commit of nothing new, or by the interval) sign
    nothing: an idle log stores no checkpoint rows."""
    log = await make_log(checkpoint_interval=0.05, checkpoint_min_gap=0.01)
    await log.signer.run_once()
    for _ in range(5):
        log.committed.set()
        await log.signer.run_once()
    assert await log.signed_sizes() == [0]
    await log.append("only")
    await log.signer.run_once()
    await log.signer.run_once()
    assert await log.signed_sizes() == [0, 1]


async def _covers(log: Log, size: int) -> list[int] | None:
    sizes = await log.signed_sizes()
    return sizes if sizes and sizes[-1] >= size else None
