"""Background work that runs every N seconds in a service process: one loop, written once.

A `Periodic` runs its job at once, then every `every` seconds counted from each start (the job's own
time does not stretch the period). A failed run (a database or broker outage, most often) is logged
with its error type only, counted, and retried at the next tick; it never ends the loop. `stop()`
lets a run in progress finish (a pass is not left half-done), then ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger(__name__)
STOP_GRACE = 15.0  # seconds a run in progress may take to finish at shutdown

FAILURES = Counter("cdap_periodic_failures_total", "Runs of a periodic job that raised", ["job"])
LAST_SUCCESS = Gauge(
    "cdap_periodic_last_success_timestamp_seconds", "When a periodic job last ran to its end", ["job"]
)


class Periodic:
    """Runs `job` every `every` seconds until stopped.

    With `drain`, a run whose result is truthy (it found work, e.g. mails sent) is followed at once by
    another, so a backlog empties without waiting a period per batch. `grace` is how long `stop()` lets
    a run in progress finish; 0 for a job that only reads (a sample), which may be cut short.
    """

    def __init__(
        self,
        name: str,
        job: Callable[[], Awaitable[object]],
        every: float,
        *,
        drain: bool = False,
        grace: float = STOP_GRACE,
    ) -> None:
        self.name = name
        self.job = job
        self.every = every
        self.drain = drain
        self.grace = grace
        self.failures = 0
        self.last_success: float | None = None  # wall-clock seconds of the last run that ended well
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> object:
        """One run; a failure is logged and counted, not raised (the result is then None)."""
        try:
            result = await self.job()
        except Exception as exc:  # the error's type only: its text may carry a statement's values
            self.failures += 1
            FAILURES.labels(self.name).inc()
            log.warning("periodic job failed, retrying later", job=self.name, error=type(exc).__name__)
            return None
        self.last_success = time.time()
        LAST_SUCCESS.labels(self.name).set(self.last_success)
        return result

    async def run(self) -> None:
        """Run until `stop()`."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            if await self.run_once() and self.drain:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, started + self.every - loop.time()))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    @property
    def started(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        """Ask the loop to end after the run in progress; cancel it if that run outlasts `grace`."""
        self._stopping.set()
        if self._task is None:
            return
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, self.grace)


@asynccontextmanager
async def running(*jobs: Periodic) -> AsyncIterator[None]:
    """Run `jobs` for the duration of the block (a lifespan's), and stop them all on the way out."""
    for job in jobs:
        job.start()
    try:
        yield
    finally:
        await asyncio.gather(*(job.stop() for job in jobs))
