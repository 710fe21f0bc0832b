"""What a service does once started and before `/ready` says ready, so that its first requests find it warm.

A service's first requests used to pay for what start-up had left for later: opening the hot path's
database connections and preparing their statements, fetching the token keys (an HTTP client built on
the event loop), a full collection of the garbage collector. Each held the event loop, or every request
behind it, for tens to hundreds of milliseconds: in the first wrk round after a start, the lookup's p99
was several times that of the next round (docs/benchmarks.md, "Lookup: the tail after a start").

`WarmUp` runs its steps in order, in the background, from the lifespan; a step that fails (PostgreSQL or
identity not reachable yet) is logged with its error type and retried every `retry_every` seconds, so
the service starts, and answers `/health`, whatever is down. `check` is a ready check: `/ready` answers
503 until every step has succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog

from cdap_shared.http import NotReady

log = structlog.get_logger(__name__)

Step = Callable[[], Awaitable[None]]


class WarmingUp(NotReady):
    """The service is still warming up (`/ready` shows this text)."""


class WarmUp:
    """Runs `steps` in order until each has succeeded once; `done` is set then."""

    def __init__(self, *steps: Step, retry_every: float = 1.0) -> None:
        self.steps = steps
        self.retry_every = retry_every
        self.done = asyncio.Event()

    async def run(self) -> None:
        """Run every step, each retried until it succeeds."""
        for step in self.steps:
            while True:
                try:
                    await step()
                    break
                except Exception as exc:  # the error's type only: its text may carry a statement's values
                    name = getattr(step, "__qualname__", repr(step))
                    log.warning("warm-up step failed, retrying", step=name, error=type(exc).__name__)
                    await asyncio.sleep(self.retry_every)
        self.done.set()

    async def check(self) -> None:
        """A ready check: raises until every step has succeeded."""
        if not self.done.is_set():
            raise WarmingUp("warming up: connections, statements and keys not all ready yet")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Warm up in the background for the duration of the block (a lifespan's); stopped on the way out."""
        task = asyncio.create_task(self.run(), name="warm-up")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
