"""identity's events: organisations, grants issued/revoked/expired, and removal requests sent back."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cdap_shared import events as ev

from .conftest import ORG, PARTNER, Service, assert_problem

pytestmark = pytest.mark.stack


def grant(grant_id: str, request_id: str | None, *, organisation_id: str = ORG) -> ev.GrantIssued:
    return ev.GrantIssued(
        grant_id=grant_id,
        user_id="user-" + grant_id,
        organisation_id=organisation_id,
        organisation_siret="21760540100033",
        profile="T2",
        department="76",
        valid_from=date.today(),
        valid_until=date.today() + timedelta(days=180),
        request_id=request_id,
    )


async def _approved(svc: Service) -> str:
    request_id = await svc.submit(profile="T2")
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "approved"
    return request_id


@pytest.mark.parametrize(
    ("end", "state"), [("identity.grant.revoked", "revoked"), ("identity.grant.expired", "expired")]
)
async def test_a_grant_issued_then_ended_moves_its_request(svc: Service, end: str, state: str) -> None:
    request_id = await _approved(svc)
    await svc.apply("identity.grant.issued", "user-g1", grant("g1", request_id))
    await svc.apply(
        "identity.user.provisioned",
        "user-g1",
        ev.UserProvisioned(
            user_id="user-g1", organisation_id=ORG, roles=["partner_user"], request_id=request_id
        ),
    )
    detail = await svc.get(request_id)
    assert (detail["state"], detail["grant_id"], detail["stage"]) == ("provisioned", "g1", None)
    assert detail["history"][-1]["action"] == "provisioned"
    events_before = len(await svc.outbox())

    await svc.apply("identity.grant.issued", "user-g1", grant("g1", request_id))  # redelivered: no effect
    assert len((await svc.get(request_id))["history"]) == len(detail["history"])

    await svc.apply(
        end, "user-g1", ev.GrantEnded(grant_id="g1", user_id="user-g1", by="caf-admin", reason="fin")
    )
    detail = await svc.get(request_id)
    assert detail["state"] == state
    assert detail["history"][-1]["actor"] == "caf-admin"
    assert len(await svc.outbox()) == events_before  # identity's events are the record: nothing re-emitted
    assert_problem(await svc.decide(request_id, svc.instructor("instructor-2")), 409, "request_closed")


async def test_a_grant_for_a_request_not_approved_changes_nothing(svc: Service) -> None:
    request_id = await svc.submit()
    before = await svc.snapshot(request_id)
    await svc.apply("identity.grant.issued", "user-g2", grant("g2", request_id))
    await svc.apply("identity.grant.issued", "user-g3", grant("g3", "01a21c0d-0000-7000-8000-000000000000"))
    after = await svc.snapshot(request_id)
    assert after["request"] == before["request"] and after["history"] == before["history"]


async def test_an_organisation_update_applies_to_the_next_submission(svc: Service) -> None:
    await svc.submit()
    await svc.apply(
        "identity.organisation.updated",
        ORG,
        (await svc.organisation()).model_copy(update={"delegation_withdrawn": True}),
    )
    r = await svc.client.post("/v1/access-requests", json=svc.submission(profile="T3"), headers=svc.partner())
    assert_problem(r, 403, "delegation_withdrawn")


async def test_a_partner_administrator_asks_for_a_removal(svc: Service) -> None:
    request_id = await _approved(svc)
    await svc.apply("identity.grant.issued", "user-g4", grant("g4", request_id))
    await svc.apply("identity.grant.issued", "user-g5", grant("g5", None, organisation_id="org-27"))

    before = await svc.snapshot()
    for grant_id, headers, status, reason in (
        ("g4", svc.instructor(), 403, "role_not_allowed"),
        ("g5", svc.partner(), 403, "not_your_organisation"),
        ("g-unknown", svc.partner(), 404, "unknown_grant"),
    ):
        r = await svc.client.post(f"/v1/grants/{grant_id}/removal-requests", headers=headers)
        assert_problem(r, status, reason)
    assert await svc.snapshot() == before

    r = await svc.client.post(
        "/v1/grants/g4/removal-requests", json={"comment": "A quitté le CCAS"}, headers=svc.partner()
    )
    assert r.status_code == 202, r.text
    removal = r.json()
    assert (removal["grant_id"], removal["requested_by"], removal["state"]) == ("g4", PARTNER, "requested")
    again = await svc.client.post("/v1/grants/g4/removal-requests", headers=svc.partner("partner-admin-2"))
    assert again.status_code == 202 and again.json()["id"] == removal["id"]

    [event] = [e for e in await svc.outbox() if e.type == "access.grant.revocation_requested"]
    data = ev.parse_data(event)
    assert isinstance(data, ev.RevocationRequested)
    assert (data.request_id, data.grant_id, data.user_id, data.by, data.comment) == (
        removal["id"],
        "g4",
        "user-g4",
        PARTNER,
        "A quitté le CCAS",
    )
    # identity revokes it: the request that created the grant shows it.
    await svc.apply(
        "identity.grant.revoked", "user-g4", ev.GrantEnded(grant_id="g4", user_id="user-g4", by=PARTNER)
    )
    assert (await svc.get(request_id))["state"] == "revoked"
    r = await svc.client.post("/v1/grants/g4/removal-requests", headers=svc.partner())
    assert_problem(r, 409, "grant_not_active")


async def test_a_suspended_manager_decides_nothing_and_a_suspended_partner_admin_submits_nothing(
    svc: Service,
) -> None:
    """Issue 13: both did, with their still-valid tokens. The suspension reaches this service as an event
    of identity's; reinstated, the manager decides again."""
    request_id = await svc.submit(profile="T1")
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "awaiting_second_approval"
    for who in ("manager-1", PARTNER):
        await svc.apply("identity.user.suspended", who, ev.UserRef(user_id=who, by="caf-admin"))
    before = await svc.snapshot(request_id)
    assert_problem(await svc.decide(request_id, svc.manager()), 403, "suspended")
    submitted = await svc.client.post(
        "/v1/access-requests", json=svc.submission(profile="T3"), headers=svc.partner()
    )
    assert_problem(submitted, 403, "suspended")
    assert await svc.snapshot(request_id) == before
    await svc.apply("identity.user.reinstated", "manager-1", ev.UserRef(user_id="manager-1", by="caf-admin"))
    assert (await svc.decide(request_id, svc.manager())).json()["state"] == "approved"
