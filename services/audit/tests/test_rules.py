"""Alert rules (pure): the file is validated at load, each kind fires exactly when it should."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from cdap_audit.domain import EntryFacts
from cdap_audit.rules import (
    DEFAULT_RULES,
    RulesError,
    RuleSet,
    dedup_key,
    evaluate,
    is_night,
    load_rules,
    window_queries,
)

RULES = RuleSet.model_validate(
    {
        "version": "t",
        "rules": [
            {"name": "night", "kind": "night", "severity": "warning"},
            {"name": "volume", "kind": "volume", "severity": "warning", "max_count": 3},
            {"name": "denials", "kind": "denials", "severity": "critical", "count": 3, "window_minutes": 5},
            {"name": "network", "kind": "network", "severity": "info"},
            {"name": "off", "kind": "night", "severity": "critical", "enabled": False},
        ],
        "organisations": {"org-1": {"networks": ["10.0.0.0/8", "2001:db8::/32"]}},
    }
)
NOON = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


def facts(**kw: object) -> EntryFacts:
    base = EntryFacts(
        "e1",
        "dossier.consulted",
        "/d",
        NOON,
        "1000001",
        actor="alice",
        organisation_id="org-1",
        decision="granted",
        client_ip="10.0.0.7",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def fired(f: EntryFacts, counts: dict[str, int] | None = None) -> list[tuple[str, str]]:
    return [(t.rule, t.severity) for t in evaluate(RULES, f, counts or {})]


def test_the_default_rules_load_and_one_is_critical() -> None:
    rules = load_rules(DEFAULT_RULES)
    assert any(r.severity == "critical" for r in rules.active)
    assert rules.timezone == "Europe/Paris"


@pytest.mark.parametrize(
    ("local", "night"),
    [
        (time(21, 59), False),
        (time(22, 0), True),
        (time(0, 0), True),
        (time(5, 59), True),
        (time(6, 0), False),
    ],
)
def test_night_wraps_midnight(local: time, night: bool) -> None:
    assert is_night(local, time(22, 0), time(6, 0)) is night
    assert is_night(local, time(1, 0), time(5, 0)) is (time(1, 0) <= local < time(5, 0))


def test_night_is_judged_in_paris_time_across_daylight_saving() -> None:
    assert fired(facts(time=datetime(2026, 7, 1, 20, 30, tzinfo=UTC))) == [("night", "warning")]  # 22:30 CEST
    assert fired(facts(time=datetime(2026, 1, 15, 20, 30, tzinfo=UTC))) == []  # 21:30 CET


def test_volume_fires_above_the_limit_and_denials_at_the_count() -> None:
    assert fired(facts(), {"volume": 3}) == []
    assert fired(facts(), {"volume": 4}) == [("volume", "warning")]
    denied = facts(decision="denied")
    assert fired(denied, {"denials": 2}) == []
    assert fired(denied, {"denials": 3}) == [("denials", "critical")]
    assert fired(facts(), {"denials": 9}) == []  # a granted lookup never completes a run of refusals


def test_window_queries_ask_only_what_the_event_can_set_off() -> None:
    assert [q.rule for q in window_queries(RULES, facts())] == ["volume"]
    assert [q.rule for q in window_queries(RULES, facts(decision="denied"))] == ["volume", "denials"]
    assert window_queries(RULES, facts(actor=None)) == []
    assert window_queries(RULES, facts(type="identity.user.suspended")) == []
    [denials] = [q for q in window_queries(RULES, facts(decision="denied")) if q.rule == "denials"]
    assert denials.window == timedelta(minutes=5) and denials.decisions == ("denied",)


@pytest.mark.parametrize(
    ("organisation", "ip", "alert"),
    [
        ("org-1", "10.200.0.1", False),
        ("org-1", "2001:db8::5", False),
        ("org-1", "192.0.2.1", True),
        ("org-1", "2001:db9::5", True),
        ("org-1", "not-an-ip", True),
        ("org-undeclared", "192.0.2.1", False),
        (None, "192.0.2.1", False),
    ],
)
def test_network(organisation: str | None, ip: str, alert: bool) -> None:
    assert fired(facts(organisation_id=organisation, client_ip=ip)) == (
        [("network", "info")] if alert else []
    )


def test_undeclared_organisations_can_be_flagged() -> None:
    strict = RuleSet.model_validate(
        {
            "version": "t",
            "rules": [{"name": "n", "kind": "network", "severity": "warning", "undeclared": "alert"}],
        }
    )
    assert len(evaluate(strict, facts(organisation_id="org-x"), {})) == 1


def test_one_alert_per_actor_rule_and_period() -> None:
    rule = RULES.rules[0]
    a = dedup_key(rule, facts(time=datetime(2026, 3, 2, 23, 1, tzinfo=UTC)))
    assert a == dedup_key(rule, facts(time=datetime(2026, 3, 2, 23, 59, tzinfo=UTC)))
    assert a != dedup_key(rule, facts(time=datetime(2026, 3, 3, 0, 0, tzinfo=UTC)))
    assert a != dedup_key(rule, facts(time=datetime(2026, 3, 2, 23, 1, tzinfo=UTC), actor="bob"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = ", "not valid TOML"),
        ('version = "1"\n[[rules]]\nname = "x"\nkind = "moon"\nseverity = "info"', "rules.0"),
        (
            'version = "1"\n[[rules]]\nname = "x"\nkind = "night"\nseverity = "info"\n'
            '[[rules]]\nname = "x"\nkind = "night"\nseverity = "info"',
            "unique",
        ),
        ('version = "1"\ntimezone = "Mars/Olympus"', "unknown time zone"),
        ('version = "1"\n[organisations.o]\nnetworks = ["10.0.0.300/8"]', "organisations.o.networks"),
        (
            'version = "1"\n[[rules]]\nname = "v"\nkind = "volume"\nseverity = "loud"\nmax_count = 1',
            "severity",
        ),
        (
            'version = "1"\n[[rules]]\nname = "v"\nkind = "volume"\nseverity = "info"\nmax_count = 0',
            "max_count",
        ),
    ],
)
def test_a_bad_rules_file_stops_the_service_with_its_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesError, match=message):
        load_rules(path)
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "missing.toml")
