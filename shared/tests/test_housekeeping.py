"""Housekeeping keeps what is still needed and deletes what has outlived its retention."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import MetaData
from sqlmodel import SQLModel

from cdap_shared.db import asyncpg_dsn, create_engine, create_tables
from cdap_shared.housekeeping import Retention, purge
from cdap_shared.inbox import InboxRecord
from cdap_shared.mail import QueuedMail
from cdap_shared.outbox import OutboxRecord
from cdap_shared.runtime import ServiceRuntime
from cdap_shared.settings import ServiceSettings
from cdap_testing import eventually

pytestmark = pytest.mark.stack


async def _tables(url: str, *models: type[SQLModel]) -> None:
    metadata = MetaData()
    for model in models:
        model.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    engine = create_engine(url, 2)
    await create_tables(engine, metadata)
    await engine.dispose()


async def test_old_rows_go_recent_and_pending_ones_stay(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    await _tables(url, OutboxRecord, InboxRecord, QueuedMail)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            outbox = (
                "INSERT INTO outbox (event_id, event_type, topic, key, payload, headers, sent_at) "
                "VALUES ($1, 'x', 't', 'k', ''::bytea, '{{}}', {})"
            )
            await conn.execute(outbox.format("now() - interval '25 hours'"), "published-long-ago")
            await conn.execute(outbox.format("now() - interval '1 hour'"), "published-recently")
            await conn.execute(outbox.format("NULL"), "never-published")
            inbox = (
                "INSERT INTO inbox (event_id, topic, received_at) "
                "VALUES ($1, 't', now() - make_interval(days => $2))"
            )
            await conn.execute(inbox, "applied-15-days-ago", 15)
            await conn.execute(inbox, "applied-13-days-ago", 13)
            mail = (
                'INSERT INTO mail_outbox ("to", subject, body, attempts, sent_at) '
                "VALUES ($1, 's', 'b', 0, {})"
            )
            await conn.execute(mail.format("now() - interval '4 days'"), "old@example.fr")
            await conn.execute(mail.format("NULL"), "unsent@example.fr")

        purged = await purge(pool, Retention(outbox_hours=24, inbox_days=14, sent_mail_hours=72))

        assert (purged.outbox, purged.inbox, purged.mail) == (1, 1, 1)
        async with pool.acquire() as conn:
            assert {r[0] for r in await conn.fetch("SELECT event_id FROM outbox")} == {
                "published-recently",
                "never-published",
            }
            assert [r[0] for r in await conn.fetch("SELECT event_id FROM inbox")] == ["applied-13-days-ago"]
            assert [r[0] for r in await conn.fetch('SELECT "to" FROM mail_outbox')] == ["unsent@example.fr"]
        again = await purge(pool, Retention())
        assert (again.outbox, again.inbox, again.mail) == (0, 0, 0)
    finally:
        await pool.close()


async def test_a_database_without_a_mail_outbox_is_purged_too(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    await _tables(url, OutboxRecord, InboxRecord)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO inbox (event_id, topic, received_at) "
                "VALUES ('e', 't', now() - interval '30 days')"
            )
        purged = await purge(pool, Retention())
        assert (purged.outbox, purged.inbox, purged.mail) == (0, 1, 0)
    finally:
        await pool.close()


async def test_a_service_process_runs_housekeeping_and_the_consumer_watch(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    await _tables(url, OutboxRecord, InboxRecord)
    settings = ServiceSettings(service_name="t", database_url=url, housekeeping_interval_seconds=0.2)
    runtime = ServiceRuntime(settings, run_relay=False)
    started = time.time()
    await runtime.start()
    try:
        outbox = (
            "INSERT INTO outbox (event_id, event_type, topic, key, payload, headers, sent_at) "
            "VALUES ('published-long-ago', 'x', 't', 'k', ''::bytea, '{}', now() - interval '25 hours')"
        )
        await runtime.pool.execute(outbox)

        async def purged() -> bool:
            return await runtime.pool.fetchval("SELECT count(*) FROM outbox") == 0

        async def watched() -> bool:
            labels = {"job": "consumer-watch"}
            last = REGISTRY.get_sample_value("cdap_periodic_last_success_timestamp_seconds", labels)
            return last is not None and last >= started

        assert await eventually(purged)
        assert await eventually(watched)
    finally:
        await runtime.stop()
