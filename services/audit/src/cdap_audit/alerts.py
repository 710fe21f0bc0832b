"""Raise alerts for one entry, in the entry's transaction: rule windows, de-duplication, outbox.

Windowed rules count the actor's recent events in `rule_activity`, a small table written here
(rows older than the longest window are purged by the maintenance task), rather than in `entry`:
the log's rows are only written at commit, and counting there would need yet another index on it.
An alert is recorded with a unique `dedup_key` (rule, actor, cooldown period); only the insert
that wins emits `audit.alert.raised`, so a burst of further events raises nothing more.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit.domain import EntryFacts
from cdap_audit.models import AlertRecord, RuleActivity
from cdap_audit.rules import RuleSet, Triggered, WindowQuery, evaluate, window_queries
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.envelope import CloudEvent, new_event_id

log = structlog.get_logger(__name__)

SOURCE = "/cdap/audit"
ACTIVITY = RuleActivity.__table__  # type: ignore[attr-defined]
ALERT = AlertRecord.__table__  # type: ignore[attr-defined]


async def check(
    session: AsyncSession, rules: RuleSet, facts: EntryFacts, index: int, topic: str
) -> list[CloudEvent]:
    """Record the activity the rules count, evaluate them, and stage each new alert in the outbox."""
    counts: dict[str, int] = {}
    if facts.actor is not None and facts.type in rules.counted_types():
        counts = await record_and_count(session, facts, window_queries(rules, facts))
    raised = []
    for triggered in evaluate(rules, facts, counts):
        event = await _raise(session, facts, index, triggered, topic)
        if event is not None:
            raised.append(event)
    return raised


# The largest number of the actor's events in any window [s, s + W] that starts at one of its
# events s in [t - W, t], i.e. any window that contains t. Events of one actor arrive from several
# partitions, not in time order: a window completed by a late event is still found, because it
# contains that event. `decisions` NULL means any decision. The event itself is being inserted by
# the same statement, which cannot see that row: it is added to the counted rows explicitly.
_WINDOW_SQL = """
SELECT {i} AS q, coalesce(max(n), 0) FROM (
    SELECT at, count(*) OVER (
        ORDER BY at RANGE BETWEEN CURRENT ROW AND CAST(:w{i} AS interval) FOLLOWING
    ) AS n
    FROM (
        SELECT at FROM rule_activity
        WHERE actor = :actor AND type = ANY(CAST(:types{i} AS text[]))
          AND (CAST(:decisions{i} AS text[]) IS NULL OR decision = ANY(CAST(:decisions{i} AS text[])))
          AND at >= CAST(:t AS timestamptz) - CAST(:w{i} AS interval)
          AND at <= CAST(:t AS timestamptz) + CAST(:w{i} AS interval)
        UNION ALL SELECT CAST(:t AS timestamptz)
    ) counted
) windows WHERE at <= CAST(:t AS timestamptz)
"""
_RECORD_SQL = (
    "INSERT INTO rule_activity (actor, type, decision, at) "
    "VALUES (:actor, :type, :decision, CAST(:t AS timestamptz))"
)


async def record_and_count(
    session: AsyncSession, facts: EntryFacts, queries: list[WindowQuery]
) -> dict[str, int]:
    """Record `facts` for the windowed rules and return, per query, the most events of its actor in
    one window containing it (this event included): one round trip, it runs for every consultation.
    """
    params: dict[str, Any] = {"actor": facts.actor, "type": facts.type, "decision": facts.decision}
    params["t"] = facts.time
    if not queries:
        await session.execute(text(_RECORD_SQL), params)
        return {}
    # Rules counting the same thing (a warning and a critical volume rule) share one count.
    distinct = list(dict.fromkeys((q.window, q.types, q.decisions) for q in queries))
    parts = []
    for i, (window, types, decisions) in enumerate(distinct):
        parts.append(f"({_WINDOW_SQL.format(i=i).strip()})")
        params |= {f"w{i}": window, f"types{i}": list(types), f"decisions{i}": _list(decisions)}
    sql = f"WITH recorded AS ({_RECORD_SQL})\n" + "\nUNION ALL\n".join(parts)
    rows = await session.execute(text(sql), params)
    counts: dict[int, int] = {int(i): int(n) for i, n in rows.all()}
    return {q.rule: counts[distinct.index((q.window, q.types, q.decisions))] for q in queries}


def _list(values: tuple[str, ...] | None) -> list[str] | None:
    return list(values) if values is not None else None


async def _raise(
    session: AsyncSession, facts: EntryFacts, index: int, triggered: Triggered, topic: str
) -> CloudEvent | None:
    alert_id = new_event_id()
    stmt = (
        pg_insert(ALERT)
        .values(
            alert_id=alert_id,
            rule=triggered.rule,
            severity=triggered.severity,
            actor=facts.actor,
            organisation_id=facts.organisation_id,
            detail=triggered.detail,
            entry_index=index,
            event_time=facts.time,
            dedup_key=triggered.dedup_key,
        )
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(ALERT.c.id)
    )
    if (await session.execute(stmt)).scalar_one_or_none() is None:
        return None  # already raised for this actor, rule and period
    data = ev.AlertRaised(
        alert_id=alert_id,
        rule=triggered.rule,
        severity=triggered.severity,
        actor=facts.actor,
        organisation_id=facts.organisation_id,
        detail=triggered.detail,
    )
    subject = facts.actor or facts.organisation_id or facts.subject
    event = ev.make_event("audit.alert.raised", source=SOURCE, subject=subject, data=data)
    await outbox.add(session, event, topic=topic)
    log.warning("alert raised", rule=triggered.rule, severity=triggered.severity, entry=index)
    return event
