"""Alert rules on crafted event streams: each raises exactly one `audit.alert.raised`, with its severity."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cdap_audit import alerts
from cdap_audit.domain import facts_from_event
from cdap_audit.rules import DEFAULT_RULES, MinuteCounts, load_rules
from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent

from .conftest import Audit, consulted, searched

pytestmark = pytest.mark.stack

RULES = """
version = "test-1"
timezone = "Europe/Paris"

[[rules]]
name = "night"
kind = "night"
severity = "warning"

[[rules]]
name = "volume"
kind = "volume"
severity = "warning"
max_count = 3
window_minutes = 60

[[rules]]
name = "denials"
kind = "denials"
severity = "critical"
count = 3
window_minutes = 5

[[rules]]
name = "network"
kind = "network"
severity = "warning"

[organisations.org-1]
networks = ["10.0.0.0/8", "2001:db8::/32"]
"""

DAY = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # 11:00 in Paris
NIGHT = datetime(2026, 1, 15, 22, 30, tzinfo=UTC)  # 23:30 in Paris (CET)


@pytest.fixture
async def audit(audit_factory: Callable[..., Awaitable[Audit]], tmp_path: Path) -> Audit:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    return await audit_factory(alert_rules_path=rules)


async def alerts_after(audit: Audit, events: list[CloudEvent]) -> list[ev.AlertRaised]:
    """Publish `events` (shuffled: one actor's events come from several partitions), wait, read the outbox."""
    shuffled = random.Random(4).sample(events, len(events))
    await audit.publish(*shuffled)
    await audit.wait_for_entries(len(events))
    return [ev.AlertRaised.model_validate(e.data) for e in await audit.outbox("audit.alert.raised")]


async def test_night_consultation_raises_one_warning(audit: Audit) -> None:
    events = [
        consulted("alice", "1000001", at=NIGHT),
        consulted("alice", "1000002", at=NIGHT + timedelta(minutes=10)),  # same hour: no second alert
        consulted("bob", "1000003", at=DAY),
        consulted("carol", "1000004", at=datetime(2026, 7, 1, 3, 59, tzinfo=UTC)),  # 05:59 in summer
        consulted("dan", "1000005", at=datetime(2026, 7, 1, 4, 0, tzinfo=UTC)),  # 06:00: day again
    ]
    raised = await alerts_after(audit, events)
    assert sorted((a.rule, a.severity, a.actor) for a in raised) == [
        ("night", "warning", "alice"),
        ("night", "warning", "carol"),
    ]
    listed = await audit.get("/v1/alerts", actor="alice")
    assert [(i["rule"], i["severity"]) for i in listed["items"]] == [("night", "warning")]


async def test_too_many_per_hour_raises_one_warning(audit: Audit) -> None:
    heavy = [consulted("erin", f"{1000010 + i}", at=DAY + timedelta(minutes=9 * i)) for i in range(6)]
    spread = [consulted("fred", f"{1000020 + i}", at=DAY + timedelta(minutes=25 * i)) for i in range(6)]
    raised = await alerts_after(audit, heavy + spread)
    assert [(a.rule, a.severity, a.actor) for a in raised] == [("volume", "warning", "erin")]
    assert "within 60 min" in raised[0].detail


async def test_repeated_denials_raise_one_critical(audit: Audit) -> None:
    def denied(actor: str, minutes: float) -> CloudEvent:
        at = DAY + timedelta(minutes=minutes)
        return consulted(actor, "1000030", decision="denied", reason="outside_caseload", at=at)

    events = [denied("gina", m) for m in (0, 1.5, 3)]  # 3 within 5 minutes
    events += [denied("hugo", m) for m in (0, 4, 8)]  # never 3 within 5 minutes
    events += [denied("ivy", m) for m in (0, 1)]  # 2 refusals and a granted lookup: not 3 refusals
    events.append(consulted("ivy", "1000031", at=DAY + timedelta(minutes=2)))
    raised = await alerts_after(audit, events)
    assert [(a.rule, a.severity, a.actor) for a in raised] == [("denials", "critical", "gina")]
    assert raised[0].organisation_id == "org-1"


async def test_unknown_network_raises_one_warning(audit: Audit) -> None:
    events = [
        consulted("ivan", "1000040", at=DAY, client_ip="203.0.113.7"),
        consulted("ivan", "1000041", at=DAY + timedelta(minutes=1), client_ip="203.0.113.7"),
        consulted("jade", "1000042", at=DAY, client_ip="10.20.30.40"),
        consulted("kim", "1000043", at=DAY, client_ip="2001:db8::1"),
        consulted("lea", "1000044", at=DAY, client_ip="203.0.113.8", organisation_id="org-undeclared"),
    ]
    raised = await alerts_after(audit, events)
    assert [(a.rule, a.severity, a.actor) for a in raised] == [("network", "warning", "ivan")]
    assert "203.0.113.7" in raised[0].detail


async def test_an_alert_is_in_the_same_transaction_as_its_entry_and_comes_back_as_an_entry(
    audit: Audit,
) -> None:
    raised = await alerts_after(audit, [consulted("mia", "1000050", at=NIGHT)])
    [alert] = raised
    logged = await audit.wait_for_entries(2)  # the consultation, then the alert consumed back
    assert logged[1]["type"] == "audit.alert.raised" and logged[1]["actor"] == "mia"
    assert logged[1]["reason"] == "night"
    rows = await audit.sql("SELECT entry_index FROM alert WHERE alert_id = $1", alert.alert_id)
    assert [r["entry_index"] for r in rows] == [logged[0]["index"]]


async def test_a_heavy_actor_raises_its_volume_alert_once_per_cooldown(audit: Audit) -> None:
    # 400 lookups in each of two hours (the cooldown periods): one alert per period, however many
    # lookups go over the limit.
    events = [
        consulted("olga", f"{1100000 + i}", at=DAY + timedelta(hours=hour, seconds=9 * i))
        for hour in (0, 1)
        for i in range(400)
    ]
    raised = await alerts_after(audit, events)
    assert [(a.rule, a.actor) for a in raised] == [("volume", "olga"), ("volume", "olga")]
    rows = await audit.sql("SELECT event_time FROM alert ORDER BY event_time")
    assert [r["event_time"].hour for r in rows] == [10, 11]


async def test_a_partner_system_s_lookups_and_searches_count_like_a_person_s(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    audit = await audit_factory(alert_rules_path=DEFAULT_RULES)
    system = "0193a1b2-partner-system-logiciel-ccas"  # a partner system's account id, as its tokens carry
    lookups = [consulted(system, f"{1200000 + i}", at=DAY + timedelta(seconds=20 * i)) for i in range(60)]
    searches = [searched(system, at=DAY + timedelta(minutes=30, seconds=20 * i)) for i in range(41)]
    raised = await alerts_after(audit, lookups + searches)  # 101 in the hour: one over the limit of 100
    assert [(a.rule, a.severity, a.actor) for a in raised] == [("volume_per_hour", "warning", system)]
    assert "dossier.consulted/dossier.searched" in raised[0].detail


async def test_an_alert_s_key_is_kept_only_once_its_batch_commits(
    make_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    """`Recorded` keeps the keys of a batch that committed, not of one rolled back; a kept key is not
    offered again by a later batch, and another period's is."""
    (tmp_path / "rules.toml").write_text(RULES)
    rules = load_rules(tmp_path / "rules.toml")
    night = [(facts_from_event(consulted("nina", "1000060", at=NIGHT)), 0)]
    recorded = alerts.Recorded()
    engine = create_async_engine(await make_database())
    try:
        fired = await alerts.evaluate_batch(rules, night, MinuteCounts(), recorded)
        assert [t.rule for _, _, t in fired] == ["night"]
        with pytest.raises(RuntimeError):
            async with AsyncSession(engine) as session, session.begin():
                recorded.keep_on_commit(session, fired)
                raise RuntimeError("killed before the commit")
        assert fired[0][2].dedup_key not in recorded
        async with AsyncSession(engine) as session, session.begin():
            recorded.keep_on_commit(session, fired)
        assert fired[0][2].dedup_key in recorded
    finally:
        await engine.dispose()
    assert await alerts.evaluate_batch(rules, night, MinuteCounts(), recorded) == []
    next_night = [(facts_from_event(consulted("nina", "1000061", at=NIGHT + timedelta(hours=1))), 1)]
    assert len(await alerts.evaluate_batch(rules, next_night, MinuteCounts(), recorded)) == 1
