"""Raise alerts for a batch of entries, in the entries' transaction: rule windows, de-duplication, outbox.

Windowed rules count from `rule_counter` (per actor, type, decision and minute), not from `entry`:
the batch's counters are read in one query, the batch's events counted in memory in order, and the
new counts added back in one upsert, so a busy actor costs what a quiet one does. The caller holds
the tree lock (`ledger`), so replicas never read counters another batch is about to change.
An alert is recorded with a unique `dedup_key` (rule, actor, cooldown period); only the insert
that wins emits `audit.alert.raised`, so a burst of further events raises nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cdap_audit.domain import EntryFacts
from cdap_audit.rules import MinuteCounts, RuleSet, Triggered, evaluate, minute_of
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.envelope import CloudEvent, new_event_id

log = structlog.get_logger(__name__)

SOURCE = "/cdap/audit"

_LOAD_SQL = """
SELECT actor, type, decision, minute, n FROM rule_counter
WHERE actor = ANY(CAST(:actors AS text[])) AND minute >= CAST(:low AS timestamptz)
  AND minute <= CAST(:high AS timestamptz)
"""
_ADD_SQL = """
INSERT INTO rule_counter (actor, type, decision, minute, n)
SELECT * FROM unnest(CAST(:actors AS text[]), CAST(:types AS text[]), CAST(:decisions AS text[]),
                     CAST(:minutes AS timestamptz[]), CAST(:ns AS int[]))
ON CONFLICT (actor, type, decision, minute) DO UPDATE SET n = rule_counter.n + excluded.n
"""
_RAISE_COLUMNS = {
    "alert_id": "text",
    "rule": "text",
    "severity": "text",
    "actor": "text",
    "organisation_id": "text",
    "detail": "text",
    "entry_index": "bigint",
    "event_time": "timestamptz",
    "dedup_key": "text",
}
_RAISE_SQL = f"""
INSERT INTO alert ({", ".join(_RAISE_COLUMNS)})
SELECT * FROM unnest({", ".join(f"CAST(:{c} AS {t}[])" for c, t in _RAISE_COLUMNS.items())})
ON CONFLICT (dedup_key) DO NOTHING RETURNING alert_id
"""  # noqa: S608  (column names and types are the constants above)


Fired = list[tuple[EntryFacts, int, Triggered]]
"""The alerts a batch sets off: (facts, leaf index, what fired), the first per dedup key."""
# Entries evaluated between two yields to the event loop (see `evaluate_batch`).
_SLICE = 250


async def load_counts(session: AsyncSession, rules: RuleSet, batch: Sequence[EntryFacts]) -> MinuteCounts:
    """The stored minute counters of the batch's actors that its windowed rules can reach."""
    counted = rules.counted_types()
    actors = sorted({f.actor for f in batch if f.actor is not None and f.type in counted})
    counts = MinuteCounts()
    if actors:
        counts.load(await _load(session, rules, actors, [f.time for f in batch]))
    return counts


class Recorded:
    """Dedup keys of the alerts this process saw committed. A later batch does not offer them to the
    database again, where their insert would do nothing: a rule firing for 500 actors then costs one
    row per actor and period, not 500 rows per batch. Alerts are never deleted, so a key kept here
    stays true; past `limit` keys they are all forgotten, which only costs those inserts again."""

    def __init__(self, limit: int = 100_000) -> None:
        self._keys: set[str] = set()
        self._limit = limit

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def keep_on_commit(self, session: AsyncSession, fired: Fired) -> None:
        """Remember `fired`'s keys once (and only if) the session's transaction commits."""
        keys = [triggered.dedup_key for _, _, triggered in fired]
        if not keys:
            return

        def committed(_: Session) -> None:
            if len(self._keys) + len(keys) > self._limit:
                self._keys.clear()
            self._keys.update(keys)

        event.listen(session.sync_session, "after_commit", committed, once=True)


class _Raised:
    """The keys a batch must not offer again: raised earlier in the batch, or recorded before it."""

    def __init__(self, batch: Container[str], recorded: Container[str]) -> None:
        self.batch, self.recorded = batch, recorded

    def __contains__(self, key: object) -> bool:
        return key in self.batch or key in self.recorded


async def evaluate_batch(
    rules: RuleSet,
    entries: Sequence[tuple[EntryFacts, int]],
    counts: MinuteCounts,
    recorded: Container[str] = (),
) -> Fired:
    """Count the batch's `(facts, leaf index)` for the windowed rules and evaluate every rule on each
    entry in order; no I/O. Alerts whose key is in `recorded` (`Recorded`) are known to be raised
    already. It yields to the event loop every few hundred entries, so that a COPY running meanwhile
    on the batch's connection keeps sending (`ledger.write`)."""
    counted = rules.counted_types()
    fired: dict[str, tuple[EntryFacts, int, Triggered]] = {}
    raised = _Raised(fired, recorded)
    for n, (facts, index) in enumerate(entries, 1):
        found: dict[str, int] = {}
        if facts.actor is not None and facts.type in counted:
            queries, minute = rules.window_queries(facts.type, facts.decision), minute_of(facts.time)
            counts.add(facts.actor, facts, minute, queries)
            found = {q.rule: counts.count(facts.actor, q, minute) for q in queries}
        for triggered in evaluate(rules, facts, found, raised):
            fired[triggered.dedup_key] = (facts, index, triggered)  # the first one: later ones skip it
        if n % _SLICE == 0:
            await asyncio.sleep(0)
    return list(fired.values())


async def record(session: AsyncSession, counts: MinuteCounts, fired: Fired, topic: str) -> list[CloudEvent]:
    """Add the batch's counts to the stored counters, and stage each new alert in the outbox;
    returns the alerts raised."""
    await _store(session, counts)
    return await _raise(session, fired, topic)


async def _load(
    session: AsyncSession, rules: RuleSet, actors: list[str], times: list[datetime]
) -> list[tuple[str, str, str, int, int]]:
    """The stored counters of `actors` that a window around any of `times` can reach."""
    reach = rules.longest_window() + timedelta(minutes=1)
    params = {"actors": actors, "low": min(times) - reach, "high": max(times) + reach}
    rows = await session.execute(text(_LOAD_SQL), params)
    return [(a, t, d, minute_of(m), int(n)) for a, t, d, m, n in rows.all()]


async def _store(session: AsyncSession, counts: MinuteCounts) -> None:
    if not counts.added:
        return
    keys = sorted(counts.added)  # one lock order for every writer
    await session.execute(
        text(_ADD_SQL),
        {
            "actors": [k[0] for k in keys],
            "types": [k[1] for k in keys],
            "decisions": [k[2] for k in keys],
            "minutes": [datetime.fromtimestamp(k[3] * 60, UTC) for k in keys],
            "ns": [counts.added[k] for k in keys],
        },
    )


async def _raise(session: AsyncSession, fired: Fired, topic: str) -> list[CloudEvent]:
    """Record the alerts (one statement); those not already recorded for their period are emitted."""
    if not fired:
        return []
    rows = [
        {
            "alert_id": new_event_id(),
            "rule": triggered.rule,
            "severity": triggered.severity,
            "actor": facts.actor,
            "organisation_id": facts.organisation_id,
            "detail": triggered.detail,
            "entry_index": index,
            "event_time": facts.time,
            "dedup_key": triggered.dedup_key,
        }
        for facts, index, triggered in fired
    ]
    # One array per column: a multi-row VALUES would be compiled anew by SQLAlchemy for every batch
    # (hundreds of rows when a rule fires for many actors, most of them already raised).
    columns = {column: [row[column] for row in rows] for column in _RAISE_COLUMNS}
    # Those not returned were already raised for that actor, rule and period.
    new = set((await session.execute(text(_RAISE_SQL), columns)).scalars())
    raised = []
    for row, (facts, index, triggered) in zip(rows, fired, strict=True):
        if row["alert_id"] not in new:
            continue
        data = ev.AlertRaised(
            alert_id=row["alert_id"],
            rule=triggered.rule,
            severity=triggered.severity,
            actor=facts.actor,
            organisation_id=facts.organisation_id,
            detail=triggered.detail,
        )
        subject = facts.actor or facts.organisation_id or facts.subject
        event = ev.make_event("audit.alert.raised", source=SOURCE, subject=subject, data=data)
        log.warning("alert raised", rule=triggered.rule, severity=triggered.severity, entry=index)
        raised.append(event)
    await outbox.add_all(session, raised, topic=topic)  # one insert: a rule may fire for many actors at once
    return raised
