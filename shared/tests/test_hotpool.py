"""The lookup's lean connection pool: bounded, reuses what it can, replaces what broke."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from cdap_shared.db import asyncpg_dsn
from cdap_shared.hotpool import HotPool

pytestmark = pytest.mark.stack


@pytest.fixture
async def dsn(make_database: Callable[[], Awaitable[str]]) -> str:
    return asyncpg_dsn(await make_database())


async def _pid(pool: HotPool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_never_more_than_its_size_and_a_waiter_gets_the_next_free_one(dsn: str) -> None:
    pool = HotPool(dsn, size=2)
    seen: set[int] = set()

    async def hold() -> None:
        async with pool.acquire() as conn:
            seen.add(await conn.fetchval("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.2)

    await asyncio.gather(*(hold() for _ in range(6)))
    assert len(seen) == 2
    assert await _pid(pool) in seen  # reused, not reopened
    await pool.close()


async def test_a_block_that_raises_or_leaves_a_transaction_open_gives_up_its_connection(dsn: str) -> None:
    pool = HotPool(dsn, size=1)
    first = await _pid(pool)
    with pytest.raises(asyncpg.PostgresError):
        async with pool.acquire() as conn:
            await conn.execute("SELECT 1/0")
    second = await _pid(pool)
    assert second != first
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
    assert await _pid(pool) != second
    await pool.close()


async def test_a_connection_the_server_dropped_is_replaced(dsn: str) -> None:
    pool = HotPool(dsn, size=1)
    victim = await _pid(pool)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", victim)
    finally:
        await admin.close()
    # Either asyncpg noticed the close (the pool then opens afresh) or the dead connection fails the
    # caller with one of the errors a lookup answers 503 to.
    try:
        first = await _pid(pool)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
        pass
    else:
        assert first != victim
    assert await _pid(pool) != victim  # the next one opens afresh
    await pool.close()


async def test_an_unreachable_database_fails_fast_and_leaves_room(dsn: str) -> None:
    pool = HotPool("postgresql://cdap:cdap@127.0.0.1:1/none", size=1, timeout=2)
    for _ in range(2):  # the failed attempt does not keep the only slot
        with pytest.raises(OSError):
            await _pid(pool)
    await pool.close()


async def test_fill_opens_every_connection_and_prepares_each_before_anyone_uses_it(dsn: str) -> None:
    prepared: list[int] = []

    async def prepare(conn: asyncpg.Connection) -> None:
        prepared.append(await conn.fetchval("SELECT pg_backend_pid()"))

    pool = HotPool(dsn, size=3, prepare=prepare)
    await pool.fill()
    assert len(set(prepared)) == 3
    in_use: set[int] = set()

    async def hold() -> None:
        async with pool.acquire() as conn:
            in_use.add(await conn.fetchval("SELECT pg_backend_pid()"))
            await asyncio.sleep(0.2)

    await asyncio.gather(*(hold() for _ in range(3)))
    assert in_use == set(prepared)  # the ones filled, none opened on demand
    await pool.close()


async def test_a_connection_that_fails_to_prepare_is_never_handed_out_and_frees_its_slot(dsn: str) -> None:
    failed: list[int] = []

    async def prepare(conn: asyncpg.Connection) -> None:
        if not failed:
            failed.append(await conn.fetchval("SELECT pg_backend_pid()"))
            raise asyncpg.PostgresError("the first connection cannot be prepared")

    pool = HotPool(dsn, size=1, prepare=prepare)
    with pytest.raises(asyncpg.PostgresError):
        await pool.fill()
    await pool.fill()  # the slot the failed one held is free again
    assert await _pid(pool) not in failed
    await pool.close()
