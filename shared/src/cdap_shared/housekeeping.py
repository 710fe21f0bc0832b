"""Keeps the messaging tables of a service's database from growing without end.

Three tables only ever grow: `outbox` (published rows are kept for a day, for diagnosis), `inbox`
(ids of applied events) and `mail_outbox` (sent mails carry activation links: kept no longer than
needed for support). The inbox must outlive the topics' retention: an event can only be redelivered
while Kafka still holds it, so its id is needed no longer than that (Kafka keeps 7 days here).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept once it has done its job."""

    outbox_hours: int = 24
    inbox_days: int = 14
    sent_mail_hours: int = 72


@dataclass(frozen=True)
class Purged:
    outbox: int
    inbox: int
    mail: int


async def _delete(conn: asyncpg.pool.PoolConnectionProxy, table: str, sql: str, *args: object) -> int:
    # A service without a mail outbox (dossiers, audit) simply has nothing to purge there.
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    if not exists:
        return 0
    status = await conn.execute(sql, *args)
    return int(status.split()[-1])


async def purge(pool: asyncpg.Pool, retention: Retention) -> Purged:
    """Delete the rows that have outlived `retention`; returns how many of each went."""
    async with pool.acquire() as conn:
        outbox = await _delete(
            conn,
            "outbox",
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(hours => $1)",
            retention.outbox_hours,
        )
        inbox = await _delete(
            conn,
            "inbox",
            "DELETE FROM inbox WHERE received_at < now() - make_interval(days => $1)",
            retention.inbox_days,
        )
        mail = await _delete(
            conn,
            "mail_outbox",
            "DELETE FROM mail_outbox WHERE sent_at < now() - make_interval(hours => $1)",
            retention.sent_mail_hours,
        )
    return Purged(outbox=outbox, inbox=inbox, mail=mail)


async def sweep(pool: asyncpg.Pool, retention: Retention) -> Purged:
    """One round of `purge`, logged when it deleted anything (the runtime runs it every hour, with
    `cdap_shared.periodic`: a round that fails, the database being down, is retried at the next)."""
    purged = await purge(pool, retention)
    if purged.outbox or purged.inbox or purged.mail:
        log.info("housekeeping purged", outbox=purged.outbox, inbox=purged.inbox, mail=purged.mail)
    return purged
