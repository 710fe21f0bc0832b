"""A lean pool of asyncpg connections for a hot path (dossiers' lookup).

asyncpg's `Pool` releases a connection through `asyncio.shield` (a task per release), a timeout scope
and a reset hook: on a lookup, acquiring and releasing cost about a tenth of the service's CPU, more
than either of its statements. This pool is a stack of open connections: acquiring pops one (or opens
one, up to `size`, or waits for one), releasing pushes it back. A connection that comes back closed, in
a transaction, or from a block that raised is terminated instead, and a new one is opened when needed,
so a database that went away and came back is reconnected to. Its users run statements outside
transactions or close what they open; nothing sets session state.

`prepare` runs on every connection the pool opens, before its first use (the lookup prepares its
statements there), and `fill()` opens them all at start-up: the first requests then wait for no
connection, no authentication and no statement to be parsed (they were most of the lookup's p99 in the
first seconds after a start: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

Prepare = Callable[[asyncpg.Connection], Awaitable[None]]


class HotPool:
    """At most `size` connections to `dsn`, each given to `prepare` when opened; `acquire()` waits at
    most `timeout` seconds."""

    def __init__(self, dsn: str, size: int, timeout: float = 5.0, *, prepare: Prepare | None = None) -> None:
        self.dsn = dsn
        self.size = size
        self.timeout = timeout
        self.prepare = prepare
        self._idle: list[asyncpg.Connection] = []
        self._waiting: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._open = 0
        self._closed = False

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the block; given back when it ends, dropped if the block raised."""
        conn = await self._take()
        try:
            yield conn
        except BaseException:
            self._drop(conn)
            raise
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
        else:
            self._give(conn)

    async def _take(self) -> asyncpg.Connection:
        while True:
            while self._idle:
                idle = self._idle.pop()
                if not idle.is_closed():
                    return idle
                self._drop(idle)  # the server closed it while it sat idle
            if self._open < self.size:
                return await self._connect()
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                conn = await asyncio.wait_for(waiter, self.timeout)
            except BaseException:
                if waiter.done() and not waiter.cancelled() and (handed := waiter.result()) is not None:
                    self._give(handed)  # handed over just as the wait ended
                raise
            if conn is not None:
                return conn
            # None: a connection was dropped, so there is room to open one

    async def fill(self) -> None:
        """Open (and prepare) connections until `size` are open: at start-up, so that the first requests
        find them ready. Raises what opening one raised (the database is unreachable); those opened stay."""
        while self._open < self.size and not self._closed:
            conn = await self._connect()
            if self._closed:  # closed while it was opening
                self._drop(conn)
            else:
                self._give(conn)

    async def _connect(self) -> asyncpg.Connection:
        """Open one more connection (counted from now on) and prepare it."""
        self._open += 1
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
        except BaseException:
            self._open -= 1
            self._hand_over(None)  # a waiter may try to open one in turn
            raise
        try:
            if self.prepare is not None:
                await self.prepare(conn)
        except BaseException:
            self._drop(conn)
            raise
        return conn

    def _give(self, conn: asyncpg.Connection) -> None:
        if not self._hand_over(conn):
            self._idle.append(conn)

    def _drop(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._open -= 1
        self._hand_over(None)

    def _hand_over(self, conn: asyncpg.Connection | None) -> bool:
        """Wake the first live waiter with `conn` (None: room to open one); False if nobody waits."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        """Close the idle connections; those in use are dropped when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            await conn.close()
