"""Alerts reach people and are followed up: names from identity's events, mails to the department's
auditors (critical at once, warnings in the daily digest), acknowledging and closing, each logged."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdap_audit import reviews
from cdap_shared import events as ev
from cdap_shared.clock import CIVIL_ZONE
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_testing import MAIL_DIR, eventually, mails_to

from .conftest import Audit, consulted, now, suspended
from .test_alerts import RULES
from .test_http import ROLES

pytestmark = pytest.mark.stack


def provisioned(
    user: str,
    *,
    roles: list[str],
    department: str | None,
    email: str | None = None,
    names: tuple[str, str] | None = None,
    organisation_id: str | None = None,
) -> CloudEvent:
    """`identity.user.provisioned` as identity publishes it (`names` = given, family)."""
    given, family = names or (None, None)
    data = ev.UserProvisioned(
        user_id=user,
        organisation_id=organisation_id,
        roles=roles,
        department=department,
        email=email,
        given_name=given,
        family_name=family,
    )
    return ev.make_event("identity.user.provisioned", source="/cdap/identity", subject=user, data=data)


def registered(organisation_id: str, name: str, department: str) -> CloudEvent:
    data = ev.OrganisationRegistered(
        organisation_id=organisation_id,
        siret="73282932000074",
        name=name,
        kind="ccas",
        department=department,
        convention_reference="CONV-1",
        convention_valid_until=datetime(2030, 1, 1).date(),
    )
    kind = "identity.organisation.registered"
    return ev.make_event(kind, source="/cdap/identity", subject=organisation_id, data=data)


def mailbox(tag: str) -> str:
    return f"{tag}-{new_event_id()}@caf76.example.fr"


class Department:
    """A department 76 with an organisation, one of its users, its auditors, and auditors elsewhere."""

    def __init__(self) -> None:
        self.org = f"org-{new_event_id()}"
        self.user = f"user-{new_event_id()}"
        self.auditor = mailbox("auditrice-76")
        self.national = mailbox("auditeur-national")
        self.elsewhere = mailbox("auditeur-27")
        self.suspended = mailbox("auditeur-suspendu")
        self.events = [
            registered(self.org, "CCAS de Rouen", "76"),
            provisioned(
                self.user,
                roles=["partner_user"],
                department="76",
                names=("Alice", "Durand"),
                organisation_id=self.org,
                email=mailbox("alice"),
            ),
            provisioned("aud-76", roles=["auditor"], department="76", email=self.auditor, names=("A", "B")),
            provisioned("aud-fr", roles=["auditor"], department=None, email=self.national),
            provisioned("aud-27", roles=["auditor"], department="27", email=self.elsewhere),
            provisioned("aud-76-s", roles=["auditor"], department="76", email=self.suspended),
            suspended("aud-76-s"),
        ]

    async def known_to(self, audit: Audit) -> None:
        """Published, logged, and in the directory (its own consumer) before any alert is raised."""
        await audit.publish(*self.events)
        await audit.wait_for_entries(len(self.events))

        async def directory() -> bool:
            rows = await audit.sql("SELECT count(*) AS n FROM person WHERE user_id LIKE 'aud-%'")
            orgs = await audit.sql("SELECT count(*) AS n FROM known_organisation")
            return rows[0]["n"] == 4 and orgs[0]["n"] == 1

        await eventually(directory, within=30)


@pytest.fixture
async def audit(audit_factory: Callable[..., Awaitable[Audit]], tmp_path: Path) -> Audit:
    rules = tmp_path / "rules.toml"
    # Without the night rule: these tests stamp events "now", and at night in Paris it would add warnings.
    night = '[[rules]]\nname = "night"\nkind = "night"\nseverity = "warning"\n'
    assert night in RULES
    rules.write_text(RULES.replace(night, ""))
    return await audit_factory(alert_rules_path=rules, alert_notify_seconds=0.2)


def denials(actor: str, organisation_id: str) -> list[CloudEvent]:
    at = now()
    return [
        consulted(
            actor,
            f"100000{i}",
            decision="denied",
            reason="outside_caseload",
            at=at,
            organisation_id=organisation_id,
        )
        for i in range(3)
    ]


async def one_alert(audit: Audit, severity: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        items = (await audit.get("/v1/alerts", severity=severity))["items"]
        return items[0] if items else None

    return dict(await eventually(found, within=30))


async def test_a_critical_alert_is_mailed_once_to_its_department_s_auditors_with_names(audit: Audit) -> None:
    d = Department()
    await d.known_to(audit)
    await audit.publish(*denials(d.user, d.org))
    alert = await one_alert(audit, "critical")
    assert (alert["actor_name"], alert["organisation_name"], alert["state"]) == (
        "Alice Durand",
        "CCAS de Rouen",
        "open",
    )

    async def mailed() -> list[str]:
        return mails_to(MAIL_DIR, d.auditor)

    [message] = await eventually(mailed, within=30)
    assert "alerte critique (denials)" in message and "/audit/alertes" in message
    assert "Alice Durand" in message and "CCAS de Rouen" in message and alert["alert_id"] in message
    assert len(await eventually(lambda: _mails(d.national), within=30)) == 1  # national auditors too
    # The relay has sent everything queued: the other department's and the suspended auditor got nothing.
    await eventually(lambda: _all_sent(audit), within=30)
    assert mails_to(MAIL_DIR, d.elsewhere) == [] and mails_to(MAIL_DIR, d.suspended) == []
    assert len(mails_to(MAIL_DIR, d.auditor)) == 1

    # Names are served beside the ids, in the list and the stream alike, never in the hashed bytes.
    [entry] = (await audit.get("/v1/entries", actor=d.user, limit=1))["items"]
    assert (entry["actor_name"], entry["organisation_name"]) == ("Alice Durand", "CCAS de Rouen")
    assert b"Alice" not in base64.b64decode(entry["leaf"]) and b"Rouen" not in base64.b64decode(entry["leaf"])


async def _mails(address: str) -> list[str]:
    return mails_to(MAIL_DIR, address)


async def _all_sent(audit: Audit) -> bool:
    rows = await audit.sql("SELECT count(*) AS n FROM mail_outbox WHERE sent_at IS NULL")
    return bool(rows[0]["n"] == 0)


async def test_an_alert_is_acknowledged_with_a_comment_then_closed_each_step_logged(audit: Audit) -> None:
    d = Department()
    await d.known_to(audit)
    await audit.publish(*denials(d.user, d.org))
    alert = await one_alert(audit, "critical")
    path = f"/v1/alerts/{alert['alert_id']}"

    async def post(action: str, body: Any, roles: list[str] | None = None) -> Any:
        return await audit.client.post(f"{path}/{action}", json=body, headers=audit.headers(roles))

    # Bad input: a 4xx problem and nothing changes.
    for action, body, status in [
        ("acknowledge", {}, 422),
        ("acknowledge", {"comment": None}, 422),
        ("reopen", {"comment": "ok"}, 404),  # no such action: no such resource
        ("acknowledge", {"comment": "   "}, 422),
        ("acknowledge", {"comment": "vu\x00"}, 422),
        ("acknowledge", {"comment": "x" * 2001}, 422),
        ("acknowledge", {"comment": "ok", "state": "closed"}, 422),
        ("close", {"comment": 3}, 422),
    ]:
        response = await post(action, body)
        assert response.status_code == status, (action, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A lone surrogate, as a JSON escape (what a broken client sends): PostgreSQL could not store it.
    surrogate = await audit.client.post(
        f"{path}/close",
        content=b'{"comment": "vu \\ud800"}',
        headers=audit.headers() | {"content-type": "application/json"},
    )
    assert surrogate.status_code == 422, surrogate.text
    unknown = await audit.client.post(
        "/v1/alerts/no-such-alert/acknowledge", json={"comment": "ok"}, headers=audit.headers()
    )
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    for roles, status in ROLES:
        if status == 200:
            continue
        headers = audit.headers(roles) if roles else {}
        for action in ("acknowledge", "close"):
            response = await audit.client.post(f"{path}/{action}", json={"comment": "ok"}, headers=headers)
            assert response.status_code == status, (roles, action)
    assert (await audit.get(path))["state"] == "open"

    acked = await post("acknowledge", {"comment": "Appel au CCAS : agent en formation, à suivre."})
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert body["state"] == "acknowledged" and body["acknowledged_by"] == "auditor-1"
    assert (
        body["acknowledgement"] == "Appel au CCAS : agent en formation, à suivre." and body["acknowledged_at"]
    )
    again = await post("acknowledge", {"comment": "encore"})
    assert again.status_code == 409 and again.json()["reason"] == "invalid_transition"
    assert (await audit.get(path))["acknowledgement"] == "Appel au CCAS : agent en formation, à suivre."

    closed = await post("close", {"comment": "Formation faite."})
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert closed.json()["closing_comment"] == "Formation faite."
    for action in ("acknowledge", "close"):
        late = await post(action, {"comment": "trop tard"})
        assert late.status_code == 409, late.text
    assert [a["alert_id"] for a in (await audit.get("/v1/alerts", state="closed"))["items"]] == [
        alert["alert_id"]
    ]
    assert (await audit.get("/v1/alerts", state="open", severity="critical"))["items"] == []

    # Each step is an entry of the log: who, which alert; the comment stays out of the hashed bytes.
    async def logged() -> list[dict[str, Any]] | None:
        steps = [
            e
            for e in await audit.all_entries()
            if e["type"].startswith("audit.alert.") and e["type"] != "audit.alert.raised"
        ]
        return steps if len(steps) == 2 else None

    steps = await eventually(logged, within=30)
    assert [(e["type"], e["actor"], e["subject"]) for e in steps] == [
        ("audit.alert.acknowledged", "auditor-1", alert["alert_id"]),
        ("audit.alert.closed", "auditor-1", alert["alert_id"]),
    ]
    assert all(b"formation" not in base64.b64decode(e["leaf"]) for e in steps)


async def test_warnings_wait_for_the_daily_digest_one_mail_per_auditor(audit: Audit) -> None:
    d = Department()
    await d.known_to(audit)
    at = now()
    # Four consultations in an hour: the volume rule (at most 3) warns, once per actor and hour.
    await audit.publish(*[consulted(d.user, f"100000{i}", at=at, organisation_id=d.org) for i in range(4)])
    warning = await one_alert(audit, "warning")

    async def seen() -> bool:
        rows = await audit.sql("SELECT mailed_at FROM alert_review WHERE alert_id = $1", warning["alert_id"])
        return bool(rows) and rows[0]["mailed_at"] is None

    await eventually(seen, within=30)  # the notifier has taken it, and left it for the digest
    sessions = audit.app.state.sessions
    settings = audit.settings

    async def digest(moment: datetime) -> int:
        async with sessions() as session, session.begin():
            return await reviews.send_digest(session, hour=7, portal_url=settings.portal_url, now=moment)

    # Until the next 07:00 in Paris the warning waits; from then on, it is mailed once.
    assert await digest(now()) == 0
    tomorrow = (at.astimezone(CIVIL_ZONE) + timedelta(days=1)).replace(hour=7, minute=0, second=0)
    assert await digest(tomorrow) == 2  # the department's auditor and the national one
    assert await digest(tomorrow + timedelta(minutes=5)) == 0

    [message] = await eventually(lambda: _mails(d.auditor), within=30)
    assert "synthèse des alertes" in message and "volume" in message and "Alice Durand" in message
    assert mails_to(MAIL_DIR, d.elsewhere) == []
