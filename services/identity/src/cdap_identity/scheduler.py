"""Time-driven work: grants past their last day expire, and the lockout state of unknown e-mails and the
enrolments nobody finished are forgotten once they no longer matter.

`sweep(sessions, now)` does one pass (one transaction) and is what tests call with the `now` they want;
`periodic(sessions, settings)` runs it every `grant_sweep_seconds` in the app's lifespan. Grants due are
locked with SKIP LOCKED, so two replicas sweeping at once expire each grant once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_identity import enrolment, habilitations, tokens
from cdap_identity.config import Settings
from cdap_shared.clock import civil_today
from cdap_shared.periodic import Periodic

log = structlog.get_logger(__name__)


async def sweep(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """One pass at `now`; returns how many grants expired (their last day, in Paris, is past)."""
    async with sessions() as session, session.begin():
        expired = await habilitations.expire_due(session, civil_today(now))
        await tokens.forget_unknown_logins(session, now)
        await enrolment.forget_expired(session, now)
    if expired:
        log.info("grants expired", count=expired)
    return expired


def periodic(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Periodic:
    """`sweep` at the real time, every `grant_sweep_seconds`; a failed pass is retried at the next one."""

    async def sweep_now() -> int:
        return await sweep(sessions, datetime.now(UTC))

    return Periodic("grant-sweep", sweep_now, settings.grant_sweep_seconds)
