"""The live stream of entries (`GET /v1/entries/stream`, Server-Sent Events).

One `TreeWatcher` per process reads the committed tree size every 200 ms (one indexed one-row
SELECT, whatever the number of clients) and wakes the streams when it grew; each stream then reads
its own next entries with the same keyset query as `GET /v1/entries`. Polling keeps the stream
independent of how ingestion commits: a NOTIFY sent by the ingestion's transaction could replace
the poll later without changing the streams (they only wait for "the size grew").

No gap, no duplicate: leaf indices are assigned under the tree lock held to commit, so entries
become visible in index order, and a stream resumes strictly after the last index it sent (the SSE
event id, sent back by a reconnecting client as `Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_audit import queries
from cdap_audit.models import TreeState
from cdap_audit.queries import EntryFilter
from cdap_shared.periodic import Periodic

STATE = TreeState.__table__  # type: ignore[attr-defined]
SIZE = select(STATE.c.size).where(STATE.c.id == 1)
POLL_INTERVAL = 0.2
BATCH = 500  # entries read per query while a stream catches up


class TreeWatcher:
    """Knows the committed tree size (polled while the app runs) and wakes whoever waits for growth."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = POLL_INTERVAL) -> None:
        self.sessions = sessions
        self.size: int | None = None
        self._grown = asyncio.Condition()
        # An outage fails a read (logged and counted): streams wait, sending heartbeats, until it ends.
        self.poll = Periodic("tree-watcher", self.read_size, interval, grace=0)

    async def wait_beyond(self, size: int | None, seconds: float) -> int | None:
        """The committed size once it exceeds `size` (or is first known), or as it is after `seconds`."""
        if not self.poll.started:  # started on first use: a service nobody streams from does not poll
            self.poll.start()

        def grown() -> bool:
            return self.size is not None and (size is None or self.size > size)

        async with self._grown:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._grown.wait_for(grown)
        return self.size

    async def read_size(self) -> None:
        """Read the committed size; wake the streams if it changed."""
        async with self.sessions() as session:
            size = (await session.execute(SIZE)).scalar_one_or_none() or 0
        if size != self.size:
            async with self._grown:
                self.size = size
                self._grown.notify_all()

    async def stop(self) -> None:
        await self.poll.stop()


def event(item: dict[str, Any]) -> str:
    """One SSE event: the entry's index as its id, the entry (as `GET /v1/entries` serves it) as data."""
    data = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    return f"id: {item['index']}\nevent: entry\ndata: {data}\n\n"


async def entry_events(
    sessions: async_sessionmaker[AsyncSession],
    watcher: TreeWatcher,
    where: EntryFilter,
    after: int | None,
    *,
    heartbeat: float,
    lifetime: float,
) -> AsyncIterator[str]:
    """SSE text of the entries matching `where` after index `after` (None: from now on), as they come.

    A comment line is sent after `heartbeat` seconds without an entry, so proxies keep the
    connection open. The stream ends after `lifetime` seconds: the client reconnects with its
    `Last-Event-ID`, and its token is checked again then.
    """
    started = time.monotonic()
    cursor = after
    if cursor is None:  # from now on: after the last committed entry
        while (known := await watcher.wait_beyond(None, heartbeat)) is None:
            yield ": heartbeat\n\n"
        cursor = known - 1
    # Sent once the starting point is fixed: a client that has read it misses nothing after it.
    yield "retry: 1000\n\n"  # reconnect after 1 s rather than the browser's default 3 s
    while time.monotonic() - started < lifetime:
        seen = watcher.size
        async with sessions() as session:
            page = await queries.entries(session, where, cursor, BATCH)
        for item in page.items:
            yield event(item)
            cursor = item["index"]
        if page.next_cursor is not None:
            continue  # catching up: read on without waiting
        if await watcher.wait_beyond(seen, heartbeat) == seen:
            yield ": heartbeat\n\n"
