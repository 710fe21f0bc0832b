"""Partner-system clients held in memory for `client_credentials`, so that issuing a token reads no row.

An entry is the client with its grant and the grant's holder, as one query returns them. It is trusted for
at most `seconds` (1 by default): a change made by another replica, or by `cdap identity` from another
process, reaches every token decision within that bound, inside the 2 seconds the enforcement guarantees
give. A change made through this process (API, Kafka handler, sweep) empties the cache the moment its
transaction commits, so the next token request already sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cdap_identity.accounts import SOURCE
from cdap_identity.models import Client, Grant, User
from cdap_shared import events as ev
from cdap_shared.events import make_event
from cdap_shared.outbox import add_pg

# The client, its grant and the grant's holder in one round trip.
_CLIENT = """
    SELECT c.id, c.organisation_id, c.secret_digest, c.disabled, c.previous_secret_digest,
           c.previous_secret_until, g.id AS grant_id, g.profile, g.department, g.status, g.valid_from,
           g.valid_until, u.status AS holder_status, u.must_reset_password AS holder_reset,
           u.totp_secret IS NOT NULL AS holder_enrolled
      FROM client c LEFT JOIN grant_habilitation g ON g.id = c.grant_id
           LEFT JOIN user_account u ON u.id = g.user_id
     WHERE c.id = $1
"""
# What of an account the client row carries: the rest of an account (lockout counters, names) changes
# at every password login and must not empty the cache.
_HOLDER_FIELDS = ("status", "must_reset_password", "totp_secret")
_CHANGED = "cdap_client_cache_changed"


class ClientCache:
    """Client rows by client id, each trusted for `seconds` after it was read; unknown ids are not kept
    (a caller trying made-up ids costs a query each, and no memory)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool, self.seconds, self._clock = pool, seconds, clock
        self._entries: dict[str, tuple[float, asyncpg.Record]] = {}
        # Bumped by every invalidation: a row read before a change committed is neither kept nor shared
        # with requests that came after it.
        self._generation = 0
        self._loading: dict[tuple[str, int], asyncio.Future[asyncpg.Record | None]] = {}

    async def get(self, client_id: str) -> asyncpg.Record | None:
        """The client's row (with its grant and holder), or None if there is no such client."""
        entry = self._entries.get(client_id)
        if entry is not None and self._clock() - entry[0] < self.seconds:
            return entry[1]
        # Concurrent requests of one client share one read (else every expiry costs one per connection).
        key = (client_id, self._generation)
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(client_id))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(loading)

    async def _load(self, client_id: str) -> asyncpg.Record | None:
        read_at, generation = self._clock(), self._generation
        row = await self._pool().fetchrow(_CLIENT, client_id)
        if row is None:
            self._entries.pop(client_id, None)
        elif generation == self._generation:
            self._entries[client_id] = (read_at, row)
        return row

    def invalidate(self) -> None:
        """Forget every entry (a client, a grant or a holder changed)."""
        self._generation += 1
        self._entries.clear()

    def watch(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Invalidate when a transaction of `sessions` that changed a client, a grant or a holder's standing
        commits (after the commit, so a concurrent read cannot put the old row back)."""
        # A session class of this cache's own: listeners on it see this app's sessions only.
        watched: type[Session] = type("ClientWatchingSession", (Session,), {})
        sessions.configure(sync_session_class=watched)
        event.listen(watched, "before_flush", _note_changes)
        event.listen(watched, "after_commit", self._after_commit)

    def _after_commit(self, session: Session) -> None:
        # A change rolled back leaves the mark for the session's next commit: emptying then is harmless.
        if session.info.pop(_CHANGED, False):
            self.invalidate()


def _note_changes(session: Session, _context: Any, _instances: Any) -> None:
    if any(_affects_clients(obj) for obj in (*session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


def _affects_clients(obj: object) -> bool:
    if isinstance(obj, Client | Grant):
        return True
    if isinstance(obj, User):
        state = inspect(obj)
        return any(state.attrs[name].history.has_changes() for name in _HOLDER_FIELDS)
    return False


class SignIns:
    """A partner system's sign-in is recorded (`identity.login.succeeded`) once per client, address and
    token lifetime on each replica, not for every token: the audit log still shows which systems got
    tokens from where and when, and issuing a token writes no row."""

    MAX_KEPT = 10_000

    def __init__(
        self, pool: Callable[[], asyncpg.Pool], window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pool, self.window, self._clock = pool, window, clock
        self._last: dict[tuple[str, str | None], float] = {}

    async def record(self, client_id: str, ip: str | None) -> None:
        """Record this sign-in unless the same client from the same address was recorded within the window."""
        now, key = self._clock(), (client_id, ip)
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            return
        if len(self._last) >= self.MAX_KEPT:
            self._last = {k: t for k, t in self._last.items() if now - t < self.window}
            if len(self._last) >= self.MAX_KEPT:
                self._last.clear()  # too many addresses at once: record more, never grow without bound
        self._last[key] = now
        event = make_event(
            "identity.login.succeeded",
            source=SOURCE,
            subject=client_id,
            data=ev.LoginSucceeded(user_id=client_id, method="client_credentials", client_ip=ip),
        )
        try:
            async with self._pool().acquire() as conn:
                await add_pg(conn, event)
        except BaseException:
            self._last.pop(key, None)  # not recorded: the next token tries again
            raise
