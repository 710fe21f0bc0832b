"""Partner-system clients as accounts of their own: listed, given a new secret, disabled, deleted, and
refused as soon as their grant, their holder or an alert says so. Every change is an event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from httpx import Response

from cdap_identity.client_cache import ClientCache
from cdap_shared import events as ev
from cdap_testing import eventually

from .conftest import Identity, auth
from .test_grants import partner_admin_with_a_grant


async def client_token(idp: Identity, client_id: str, secret: str) -> Response:
    return await idp.client.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


async def new_client(
    idp: Identity, partner: dict[str, str], grant: dict[str, Any]
) -> tuple[str, str, dict[str, str]]:
    """A client of `grant`, its secret, and the headers of a token it obtained."""
    created = await idp.client.post(
        "/v1/clients", headers=partner, json={"grant_id": grant["id"], "name": "SI"}
    )
    assert created.status_code == 201, created.text
    client_id, secret = created.json()["client_id"], created.json()["client_secret"]
    token = await client_token(idp, client_id, secret)
    assert token.status_code == 200, token.text
    return client_id, secret, {"Authorization": f"Bearer {token.json()['access_token']}"}


async def organisation_as(idp: Identity, headers: dict[str, str], org_id: str) -> Response:
    """Any authenticated call: a partner system may read its own organisation."""
    return await idp.client.get(f"/v1/organisations/{org_id}", headers=headers)


async def test_a_client_is_listed_rotated_disabled_and_deleted_each_with_its_event(idp: Identity) -> None:
    _admin, org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, system = await new_client(idp, partner, grant)

    listed = await idp.client.get("/v1/clients", headers=partner, params={"organisation": org["id"]})
    assert listed.status_code == 200 and [c["client_id"] for c in listed.json()] == [client_id]
    assert secret not in listed.text and "secret" not in listed.text

    rotated = await idp.client.post(f"/v1/clients/{client_id}/rotate", headers=partner)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != secret and rotated.json()["previous_secret_valid_until"] is None
    assert (await client_token(idp, client_id, secret)).json()["error"] == "invalid_client"  # no overlap
    assert (await client_token(idp, client_id, new_secret)).status_code == 200

    disabled = await idp.client.post(
        f"/v1/clients/{client_id}/disable", headers=partner, json={"reason": "fuite"}
    )
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await client_token(idp, client_id, new_secret)).json()["error"] == "invalid_client"
    refused = await organisation_as(idp, system, org["id"])  # its token, still unexpired
    assert refused.status_code == 403 and refused.json()["reason"] == "client_disabled"
    assert (await idp.client.post(f"/v1/clients/{client_id}/rotate", headers=partner)).status_code == 409

    deleted = await idp.client.delete(f"/v1/clients/{client_id}", headers=partner)
    assert deleted.status_code == 204
    assert (
        await idp.client.get("/v1/clients", headers=partner, params={"organisation": org["id"]})
    ).json() == []
    assert (await organisation_as(idp, system, org["id"])).json()["reason"] == "client_deleted"
    assert (await client_token(idp, client_id, new_secret)).json()["error"] == "invalid_client"
    assert (await idp.client.delete(f"/v1/clients/{client_id}", headers=partner)).status_code == 404

    changes = [e for e in await idp.outbox() if e.type.startswith("identity.client.")]
    assert [e.type for e in changes] == [
        "identity.client.created",
        "identity.client.rotated",
        "identity.client.disabled",
        "identity.client.deleted",
    ]
    assert all(e.subject == client_id and e.data["grant_id"] == grant["id"] for e in changes)
    assert changes[2].data["reason"] == "fuite" and secret not in str([e.data for e in changes])


async def test_a_rotated_secret_works_on_for_the_configured_overlap(
    identity_factory: Callable[..., Awaitable[Identity]],
) -> None:
    idp = await identity_factory(client_secret_overlap_seconds=3600)
    _admin, _org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, _ = await new_client(idp, partner, grant)
    rotated = await idp.client.post(f"/v1/clients/{client_id}/rotate", headers=partner)
    assert rotated.json()["previous_secret_valid_until"] is not None
    assert (await client_token(idp, client_id, secret)).status_code == 200
    assert (await client_token(idp, client_id, rotated.json()["client_secret"])).status_code == 200
    again = await idp.client.post(f"/v1/clients/{client_id}/rotate", headers=partner)
    assert (await client_token(idp, client_id, secret)).json()["error"] == "invalid_client"  # two back
    assert (await client_token(idp, client_id, again.json()["client_secret"])).status_code == 200


async def test_a_suspended_holder_stops_its_clients_and_gets_no_new_one(idp: Identity) -> None:
    admin, org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, system = await new_client(idp, partner, grant)
    suspended = await idp.client.post(f"/v1/users/{grant['user_id']}/suspend", headers=auth(admin))
    assert suspended.status_code == 200

    assert (await client_token(idp, client_id, secret)).json()["error"] == "invalid_grant"
    assert (await organisation_as(idp, system, org["id"])).json()["reason"] == "holder_suspended"
    refused = await idp.client.post(
        "/v1/clients", headers=partner, json={"grant_id": grant["id"], "name": "SI"}
    )
    assert refused.status_code == 409 and refused.json()["reason"] == "holder_suspended"
    by_caf = await idp.client.post(
        "/v1/clients", headers=auth(admin), json={"grant_id": grant["id"], "name": "SI"}
    )
    assert by_caf.status_code == 409


async def test_a_revoked_grant_stops_its_clients_current_tokens(idp: Identity) -> None:
    admin, org, partner, grant = await partner_admin_with_a_grant(idp)
    _, _, system = await new_client(idp, partner, grant)
    assert (await organisation_as(idp, system, org["id"])).status_code == 200
    await idp.client.post(f"/v1/grants/{grant['id']}/revoke", headers=auth(admin))
    assert (await organisation_as(idp, system, org["id"])).json()["reason"] == "grant_ended"


async def test_a_critical_alert_naming_a_client_disables_it(idp: Identity) -> None:
    _admin, org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, system = await new_client(idp, partner, grant)
    alert = ev.AlertRaised(
        alert_id="a-1",
        rule="volume",
        severity="critical",
        actor=client_id,
        organisation_id=org["id"],
        detail="x",
    )
    await idp.publish(
        idp.settings.alerts_topic,
        ev.make_event("audit.alert.raised", source="/audit", subject=client_id, data=alert),
    )
    [event] = await eventually(lambda: idp.outbox("identity.client.disabled"))
    assert event.data["by"] == "audit" and event.data["reason"] == "alert:volume"
    assert (await client_token(idp, client_id, secret)).json()["error"] == "invalid_client"
    assert (await organisation_as(idp, system, org["id"])).json()["reason"] == "client_disabled"


async def test_a_grant_revoked_by_a_removal_request_stops_its_client_at_once(idp: Identity) -> None:
    _admin, _org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, _ = await new_client(idp, partner, grant)  # its row is now in the client cache
    removal = ev.RevocationRequested(
        request_id="req-removal", grant_id=grant["id"], user_id=grant["user_id"], by="manager-1"
    )
    await idp.publish(
        idp.settings.access_topic,
        ev.make_event("access.grant.revocation_requested", source="/test", subject=grant["id"], data=removal),
    )
    await eventually(lambda: idp.outbox("identity.grant.revoked"))
    refused = await client_token(idp, client_id, secret)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_a_partner_systems_sign_in_is_recorded_once_per_address_and_token_lifetime(
    idp: Identity,
) -> None:
    _admin, _org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, secret, _ = await new_client(idp, partner, grant)
    for _ in range(3):
        assert (await client_token(idp, client_id, secret)).status_code == 200
    wrong = await client_token(idp, client_id, secret + "x")
    assert wrong.status_code == 401
    [signed_in] = [e for e in await idp.outbox("identity.login.succeeded") if e.subject == client_id]
    assert signed_in.data["method"] == "client_credentials" and signed_in.data["client_ip"]


class CountingPool:
    """The app's pool, counting the client reads that reach the database."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.reads = pool, 0

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.reads += 1
        return await self.pool.fetchrow(query, *args)


async def test_a_change_made_elsewhere_reaches_the_cache_within_its_lifetime(idp: Identity) -> None:
    """Another replica's change (here: a direct UPDATE) is seen once the entry is `seconds` old, and
    concurrent requests of one client share one read."""
    _admin, _org, partner, grant = await partner_admin_with_a_grant(idp)
    client_id, _, _ = await new_client(idp, partner, grant)
    pool, clock = CountingPool(idp.app.state.runtime.pool), [0.0]
    cache = ClientCache(lambda: pool, 1.0, clock=lambda: clock[0])  # type: ignore[arg-type, return-value]

    rows = await asyncio.gather(*(cache.get(client_id) for _ in range(20)))
    assert pool.reads == 1 and all(row is not None and not row["disabled"] for row in rows)
    await idp.app.state.runtime.pool.execute("UPDATE client SET disabled = true WHERE id = $1", client_id)
    clock[0] = 0.9
    stale = await cache.get(client_id)
    assert stale is not None and not stale["disabled"] and pool.reads == 1  # trusted within its lifetime
    clock[0] = 1.0
    fresh = await cache.get(client_id)
    assert fresh is not None and fresh["disabled"] and pool.reads == 2
    assert await cache.get("cdap-unknown") is None and await cache.get("cdap-unknown") is None
    assert pool.reads == 4  # unknown ids are not kept


async def test_a_token_form_with_too_many_fields_is_an_oauth_error(idp: Identity) -> None:
    form = {"grant_type": "client_credentials", **{f"x{i}": "1" for i in range(20)}}
    refused = await idp.client.post("/v1/token", data=form)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
