"""Issue 13: a suspension, a forced reset or a revocation holds on every authenticated call of every
service within seconds, not when the token expires; and a suspended CAF admin can do nothing at all.

Every service is a real process. The operations are read from each service's OpenAPI document (as the
abuse tests do), so a new endpoint that forgets the standing check fails here. How long each service took
to refuse is written to `test-artifacts/system/standing-latency.json` (measured, not asserted)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from cdap_shared.services import backends
from cdap_testing import protected_operations
from cdap_testing.system import LOGS, System, activate_and_login, bearer, caf_staff, wait_ready

from .test_revocation import provisioned_partner

pytestmark = pytest.mark.stack

SERVICES = backends()
# One call per service that the caller may make while in good standing: polled until it is refused.
PROBES = {
    "identity": "/v1/organisations/0000001",
    "access-requests": "/v1/profiles",
    "dossiers": "/v1/dossiers/0000001?motif=accompagnement_social",
    "audit": "/v1/entries",
}


async def operations(client: httpx.AsyncClient, system: System) -> list[tuple[str, str, str]]:
    """(service, METHOD, path with placeholders) of every /v1 operation taking a token, of every service."""
    found = []
    for service in SERVICES:
        document = (await client.get(f"{system.url(service)}/openapi.json")).json()
        found += [
            (service, method, re.sub(r"\{[^}]+\}", "0000001", path))
            for method, path in protected_operations(document)
        ]
    return found


async def refused_everywhere(
    client: httpx.AsyncClient, system: System, headers: dict[str, str], reason: str
) -> list[str]:
    """Every operation answers 403 problem+json with `reason`; returns those that did not."""
    wrong = []
    ops = await operations(client, system)
    assert len(ops) >= 30, ops  # every service's API, not an empty document
    for service, method, path in ops:
        r = await client.request(method, f"{system.url(service)}{path}", headers=headers)
        ok = r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        if not (ok and r.json().get("reason") == reason):
            wrong.append(f"{service} {method} {path}: {r.status_code} {r.text[:100]}")
    return wrong


async def seconds_until_refused(
    client: httpx.AsyncClient, system: System, headers: dict[str, str], reason: str, since: float
) -> dict[str, float]:
    """Per service, how long after `since` its probe first answered 403 with `reason`."""

    async def probe(service: str) -> float:
        while True:
            r = await client.get(f"{system.url(service)}{PROBES[service]}", headers=headers)
            if r.status_code == 403 and r.json().get("reason") == reason:
                return round(time.monotonic() - since, 3)
            assert time.monotonic() - since < 60, f"{service} still honours the token: {r.text[:200]}"
            await asyncio.sleep(0.02)

    return dict(zip(SERVICES, await asyncio.gather(*(probe(s) for s in SERVICES)), strict=True))


async def refresh(client: httpx.AsyncClient, system: System, token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return await client.post(f"{system.url('identity')}/v1/token", data=form)


async def test_suspension_and_revocation_hold_on_every_operation_of_every_service(system: System) -> None:
    await system.start(*SERVICES)
    figures: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=20) as client:
        await wait_ready(client, *(system.url(name) for name in SERVICES))
        identity = system.url("identity")
        admin, email, _org = await provisioned_partner(system, client)
        rogue = await caf_staff(system, client, admin, "caf_admin")
        agent = await activate_and_login(client, identity, email)
        [grant] = (await client.get(f"{identity}/v1/me", headers=agent["headers"])).json()["grants"]
        created = await client.post(
            f"{identity}/v1/clients", headers=admin["headers"], json={"grant_id": grant["id"], "name": "SI"}
        )
        assert created.status_code == 201, created.text
        issued = await client.post(
            f"{identity}/v1/token",
            data={
                "grant_type": "client_credentials",
                **{k: created.json()[k] for k in ("client_id", "client_secret")},
            },
        )
        assert issued.status_code == 200, issued.text
        partner_system = bearer(issued.json()["access_token"])
        for service, path in PROBES.items():  # controls: both tokens are honoured before the decisions
            for headers in (rogue["headers"], partner_system):
                r = await client.get(f"{system.url(service)}{path}", headers=headers)
                assert r.status_code not in (401, 403) or r.json().get("reason") not in (
                    "suspended",
                    "grant_ended",
                ), r.text

        # A CAF admin suspended: its still-valid token is refused everywhere, for itself too.
        started = time.monotonic()
        done = await client.post(f"{identity}/v1/users/{rogue['user_id']}/suspend", headers=admin["headers"])
        assert done.status_code == 200, done.text
        figures["suspension"] = await seconds_until_refused(
            client, system, rogue["headers"], "suspended", started
        )
        assert await refused_everywhere(client, system, rogue["headers"], "suspended") == []
        itself = await client.post(
            f"{identity}/v1/users/{rogue['user_id']}/reinstate", headers=rogue["headers"]
        )
        assert itself.status_code == 403 and itself.json()["reason"] == "suspended"
        lookup = await client.get(f"{system.url('dossiers')}{PROBES['dossiers']}", headers=rogue["headers"])
        assert lookup.headers["X-Audit-Id"]  # a refused lookup is a recorded consultation all the same
        assert (await refresh(client, system, rogue["refresh"])).json()["error"] == "invalid_grant"
        back = await client.post(
            f"{identity}/v1/users/{rogue['user_id']}/reinstate", headers=admin["headers"]
        )
        assert back.status_code == 200
        assert (await refresh(client, system, rogue["refresh"])).json()["error"] == "invalid_grant"

        # The grant a partner system works under revoked: its still-valid token is refused everywhere.
        started = time.monotonic()
        revoked = await client.post(f"{identity}/v1/grants/{grant['id']}/revoke", headers=admin["headers"])
        assert revoked.status_code == 200, revoked.text
        figures["revocation"] = await seconds_until_refused(
            client, system, partner_system, "grant_ended", started
        )
        assert await refused_everywhere(client, system, partner_system, "grant_ended") == []
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "standing-latency.json").write_text(json.dumps(figures, indent=2))
    print("seconds until refused:", figures)
