"""Outbox rows of concurrent lookups appended together (`outbox.GroupAppend`): each caller returns once
its own row has committed, the rows keep their callers' order, and a failed statement is every one of
its callers' failure, not a silent loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from cdap_shared import outbox
from cdap_shared.db import asyncpg_dsn, create_engine, create_tables
from cdap_shared.envelope import new_event_id
from cdap_shared.hotpool import HotPool

pytestmark = pytest.mark.stack


@pytest.fixture
async def dsn(make_database: Callable[[], Awaitable[str]]) -> str:
    url = await make_database()
    engine = create_engine(url, 1)
    await create_tables(engine)
    await engine.dispose()
    return asyncpg_dsn(url)


@pytest.fixture
async def records(dsn: str) -> AsyncIterator[outbox.GroupAppend]:
    pool = HotPool(dsn, 1, prepare=outbox.prepare_group_append)
    yield outbox.GroupAppend(pool)
    await pool.close()


def staged(i: int) -> outbox.Staged:
    return outbox.Staged(new_event_id(), "dossier.consulted", f"{1000000 + i:07d}", b'{"n": %d}' % i, "{}")


async def test_concurrent_rows_go_in_few_statements_each_committed_before_its_caller_returns(
    dsn: str, records: outbox.GroupAppend
) -> None:
    rows = [staged(i) for i in range(200)]
    observer = await asyncpg.connect(dsn)
    seen_on_return: list[int] = []
    one_at_a_time = asyncio.Lock()  # one connection runs one query at a time
    count = "SELECT count(*) FROM outbox WHERE event_id = $1"

    async def append(row: outbox.Staged) -> None:
        await records.append(row)
        # Another connection sees the row as soon as its caller is told it is recorded: committed.
        async with one_at_a_time:
            seen_on_return.append(await observer.fetchval(count, row[0]))

    try:
        await asyncio.gather(*(append(row) for row in rows))
        stored = await observer.fetch("SELECT event_id, key, payload FROM outbox ORDER BY id")
        xacts = await observer.fetch("SELECT DISTINCT xmin::text FROM outbox")
    finally:
        await observer.close()
    assert seen_on_return == [1] * len(rows)
    assert [(r["event_id"], r["key"], r["payload"]) for r in stored] == [(r[0], r[2], r[3]) for r in rows]
    # Grouped: far fewer transactions than rows.
    assert len(xacts) < len(rows) // 4


async def test_a_row_the_database_refuses_fails_its_own_caller_only(
    dsn: str, records: outbox.GroupAppend
) -> None:
    first = staged(1)
    await records.append(first)
    second = staged(2)
    blocker = asyncio.create_task(records.append(second))  # the statement in flight
    await asyncio.sleep(0)
    duplicate = outbox.Staged(*first)  # the same event id: the unique index refuses it
    batch = [staged(i) for i in range(3, 7)]
    # These queue behind the one in flight, so they go in one statement, which the duplicate fails.
    results = await asyncio.gather(
        *(records.append(row) for row in [batch[0], duplicate, *batch[1:]]), return_exceptions=True
    )
    await blocker
    assert isinstance(results[1], asyncpg.UniqueViolationError)
    assert [results[0], *results[2:]] == [None] * len(batch)
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM outbox ORDER BY id")]
    finally:
        await conn.close()
    assert ids == [first[0], second[0], *(row[0] for row in batch)]  # each once, in their callers' order


async def test_an_unreachable_database_fails_every_caller_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []
    connect = asyncpg.connect

    async def counted(dsn: str, **kwargs: object) -> asyncpg.Connection:
        attempts.append(dsn)
        return await connect(dsn, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", counted)
    pool = HotPool("postgresql://nobody@127.0.0.1:1/none", 1, timeout=1.0)
    records = outbox.GroupAppend(pool)
    results = await asyncio.gather(*(records.append(staged(i)) for i in range(50)), return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
    # One or two statements (the first row, then those queued behind it), not one attempt per row: with
    # each attempt taking up to the pool's timeout, lookups would wait minutes for their 503.
    assert len(attempts) <= 2
    await pool.close()
