"""Habilitations from approved requests (via Kafka), revocation, expiry, partner systems, alerts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import jwt
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select

from cdap_identity import habilitations
from cdap_identity.models import Grant, User
from cdap_shared import events as ev
from cdap_shared.kafka_access import KafkaLogin
from cdap_testing import eventually
from cdap_testing.events import request_approved

from .conftest import STRONG, Identity, auth, unique_email

pytestmark = pytest.mark.stack


def approved(org_id: str, email: str, profile: str = "T2", request_id: str = "req-1") -> ev.CloudEvent:
    return request_approved(org_id, email, profile, request_id=request_id)


async def count(idp: Identity, model: type) -> int:
    async with idp.app.state.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_an_approved_request_provisions_account_and_grant_once(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = unique_email("jules")
    event = approved(org["id"], email, profile="T1")
    await idp.publish(idp.settings.access_topic, event)
    await idp.publish(idp.settings.access_topic, event)  # redelivered: no second effect

    async def issued() -> list[ev.CloudEvent]:
        return await idp.outbox("identity.grant.issued")

    [grant_event] = await eventually(issued)
    assert grant_event.data["request_id"] == "req-1" and grant_event.data["profile"] == "T1"
    assert grant_event.data["organisation_siret"] == org["siret"]
    provisioned = await idp.outbox("identity.user.provisioned")
    assert [p.data["request_id"] for p in provisioned if p.data["request_id"]] == ["req-1"]

    # The new user activates from the mail; holding T1, they must enrol TOTP; their token carries the grant.
    activation = await idp.activate(email)
    assert activation["totp_secret"]
    import pyotp

    r = await idp.token(email, STRONG, pyotp.TOTP(activation["totp_secret"]).now())
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["grants"] == [{"id": grant_event.data["grant_id"], "profile": "T1", "department": "76"}]
    assert claims["roles"] == ["partner_user"] and claims["org"] == org["id"]
    assert await count(idp, Grant) == 1 and await count(idp, User) == 3  # admin, org admin, Jules


async def test_a_grant_for_an_unknown_organisation_goes_to_the_dlq(idp: Identity) -> None:
    await idp.publish(idp.settings.access_topic, approved("no-such-org", unique_email(), request_id="req-x"))
    consumer = AIOKafkaConsumer(
        f"{idp.settings.access_topic}.dlq",
        bootstrap_servers=idp.settings.kafka_bootstrap,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:

        async def dead() -> list[object]:
            batch = await consumer.getmany(timeout_ms=500)
            return [r for rs in batch.values() for r in rs]

        [record] = await eventually(dead, within=20)
    finally:
        await consumer.stop()
    headers = {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]
    assert headers["x-error-type"] == "UnknownOrganisation" and "no-such-org" in headers["x-error"]
    assert await count(idp, Grant) == 0


async def test_a_critical_alert_suspends_the_user(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email, user_id = org["admin_emails"][0], org["administrators"][0]
    await idp.activate(email)
    for severity in ("warning", "critical"):
        await idp.publish(
            idp.settings.alerts_topic,
            ev.make_event(
                "audit.alert.raised",
                source="/audit",
                subject=user_id,
                data=ev.AlertRaised(
                    alert_id=f"a-{severity}",
                    rule="night_use",
                    severity=severity,
                    actor=user_id,
                    detail="03:12",
                ),
            ),
        )

    async def suspended() -> list[ev.CloudEvent]:
        return await idp.outbox("identity.user.suspended")

    [event] = await eventually(suspended)
    assert event.data["reason"] == "alert:night_use" and event.data["by"] == "audit"
    assert (await idp.token(email, STRONG)).json()["error_description"] == "account suspended"


async def partner_admin_with_a_grant(
    idp: Identity,
) -> tuple[dict[str, str], dict[str, Any], dict[str, str], dict[str, Any]]:
    """A CAF admin, an organisation whose activated admin is logged in (headers), and the grant an
    approved request gave one of its agents."""
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    await idp.publish(idp.settings.access_topic, approved(org["id"], unique_email("agent")))
    await eventually(lambda: idp.outbox("identity.grant.issued"))
    partner = {"Authorization": f"Bearer {(await idp.token(email, STRONG)).json()['access_token']}"}
    [grant] = (await idp.client.get("/v1/grants", headers=partner)).json()
    return admin, org, partner, grant


async def test_partner_systems_get_tokens_while_their_grant_is_active(idp: Identity) -> None:
    admin, _org, partner, grant = await partner_admin_with_a_grant(idp)

    created = await idp.client.post(
        "/v1/clients", headers=partner, json={"grant_id": grant["id"], "name": "SI bailleur"}
    )
    assert created.status_code == 201, created.text
    client_id, secret = created.json()["client_id"], created.json()["client_secret"]
    r = await idp.client.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["partner_system"] and claims["grants"][0]["id"] == grant["id"]
    assert "refresh_token" not in r.json()
    basic = await idp.client.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert basic.status_code == 200
    wrong = await idp.client.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret + "x"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"

    revoked = await idp.client.post(
        f"/v1/grants/{grant['id']}/revoke", headers=auth(admin), json={"reason": "fin"}
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    after = await idp.client.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    [event] = await idp.outbox("identity.grant.revoked")
    assert event.data["grant_id"] == grant["id"] and event.data["reason"] == "fin"


async def test_a_withdrawn_delegation_stops_partner_admins_creating_clients(idp: Identity) -> None:
    admin, org, partner, grant = await partner_admin_with_a_grant(idp)
    withdrawn = await idp.client.post(
        f"/v1/organisations/{org['id']}/withdraw-delegation", headers=auth(admin)
    )
    assert withdrawn.status_code == 200 and withdrawn.json()["delegation_withdrawn"] is True

    refused = await idp.client.post(
        "/v1/clients", headers=partner, json={"grant_id": grant["id"], "name": "SI bailleur"}
    )
    assert refused.status_code == 403 and refused.json()["reason"] == "delegation_withdrawn"
    assert refused.headers["content-type"] == "application/problem+json"
    # The CAF itself still may (it took the administration back).
    by_caf = await idp.client.post(
        "/v1/clients", headers=auth(admin), json={"grant_id": grant["id"], "name": "SI bailleur"}
    )
    assert by_caf.status_code == 201, by_caf.text


async def test_partner_admins_cannot_revoke_nor_see_other_organisations(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin, siret="73282932000074")
    other = await idp.create_organisation(admin, siret="55204944776279")
    await idp.publish(idp.settings.access_topic, approved(other["id"], unique_email(), request_id="req-o"))
    await eventually(lambda: idp.outbox("identity.grant.issued"))
    email = org["admin_emails"][0]
    await idp.activate(email)
    partner = {"Authorization": f"Bearer {(await idp.token(email, STRONG)).json()['access_token']}"}
    assert (await idp.client.get("/v1/grants", headers=partner)).json() == []
    [grant] = (await idp.client.get("/v1/grants", headers=auth(admin))).json()
    assert (await idp.client.post(f"/v1/grants/{grant['id']}/revoke", headers=partner)).status_code == 403
    assert (
        await idp.client.post("/v1/clients", headers=partner, json={"grant_id": grant["id"], "name": "x"})
    ).status_code == 403
    assert (await idp.client.get(f"/v1/organisations/{other['id']}", headers=partner)).status_code == 403


async def test_the_sweep_expires_grants_after_their_last_day(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    await idp.publish(idp.settings.access_topic, approved(org["id"], unique_email()))
    [issued] = await eventually(lambda: idp.outbox("identity.grant.issued"))
    last_day = date.fromisoformat(issued.data["valid_until"])
    async with idp.app.state.sessions() as s, s.begin():
        assert await habilitations.expire_due(s, last_day) == 0  # still valid on its last day
    async with idp.app.state.sessions() as s, s.begin():
        assert await habilitations.expire_due(s, last_day + timedelta(days=1)) == 1
    [expired] = await idp.outbox("identity.grant.expired")
    assert expired.data["grant_id"] == issued.data["grant_id"]
