"""An auditor searches the log and the alerts by a person's e-mail: the directory (a projection of
identity's events) turns it into that person's accounts, in every organisation they belong to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_testing import eventually

from .conftest import Audit, consulted
from .test_alert_reviews import Department, audit, denials, one_alert, provisioned

__all__ = ["audit"]  # the alert tests' service (rules without the night rule), used here as a fixture

pytestmark = pytest.mark.stack


async def test_the_log_is_searched_by_a_person_s_e_mail(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    audit = await audit_factory()
    email = f"lea.martin-{new_event_id()}@ccas.example.fr"
    # One person, two accounts (two organisations); another person; an account without an e-mail yet.
    accounts = {"lea-ccas": "org-ccas", "lea-bailleur": "org-bailleur"}
    events = [
        provisioned(user, roles=["partner_user"], department="76", email=email, organisation_id=org)
        for user, org in accounts.items()
    ]
    events.append(provisioned("paul", roles=["partner_user"], department="76", email="paul@x.example.fr"))
    events += [consulted(user, f"100000{i}") for i, user in enumerate((*accounts, "paul", "nobody"))]
    await audit.publish(*events)
    await audit.wait_for_entries(len(events))

    async def directory() -> bool:
        rows = await audit.sql("SELECT count(*) AS n FROM person")
        return bool(rows[0]["n"] == 3)

    await eventually(directory, within=30)

    found = await audit.all_entries(actor=email.upper(), type="dossier.consulted")  # case aside
    assert sorted(e["actor"] for e in found) == sorted(accounts)
    assert sorted(e["subject"] for e in found) == ["1000000", "1000001"]
    assert [e["actor"] for e in await audit.all_entries(actor="paul")] == ["paul"]  # ids as before
    assert await audit.all_entries(actor="personne@example.fr") == []  # an unknown address: nothing

    too_long = await audit.client.get(
        "/v1/entries", params={"actor": "a" * 250 + "@x.fr"}, headers=audit.headers()
    )
    assert too_long.status_code in (400, 422)
    assert too_long.headers["content-type"].startswith("application/problem+json")


async def test_alerts_are_searched_by_the_person_s_e_mail(audit: Audit) -> None:
    d = Department()
    await d.known_to(audit)
    await audit.publish(*denials(d.user, d.org))
    alert = await one_alert(audit, "critical")
    user = ev.parse_data(d.events[1])  # the department's partner user, as identity provisioned them
    assert isinstance(user, ev.UserProvisioned) and user.user_id == d.user and user.email
    email = user.email
    found = (await audit.get("/v1/alerts", actor=email))["items"]
    assert [a["alert_id"] for a in found] == [alert["alert_id"]]
    assert (await audit.get("/v1/alerts", actor="personne@example.fr"))["items"] == []
