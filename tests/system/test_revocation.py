"""Guarantee 4 across real processes: a revocation or suspension made in identity denies the next
dossier lookups within 2 seconds, while the partner's token is still valid."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from cdap_cli.caf_feed import build_pools, make_dossier
from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_shared.topics import named
from cdap_testing.events import publish, request_approved
from cdap_testing.system import System, activate_and_login, bootstrap_admin, wait_ready

pytestmark = pytest.mark.stack


async def provisioned_partner(
    system: System, client: httpx.AsyncClient
) -> tuple[dict[str, object], str, dict]:
    """A CAF admin, an organisation, and a T1 social worker provisioned from an approved request."""
    identity = system.url("identity")
    admin = await bootstrap_admin(system, client, f"admin.{new_event_id()[-10:]}@caf76.fr")
    org = await client.post(
        f"{identity}/v1/organisations",
        headers=admin["headers"],
        json={
            "siret": "21760540100017",
            "name": "CCAS de Rouen",
            "kind": "ccas",
            "department": "76",
            "convention": {"reference": "CONV-76-CCAS", "valid_until": "2030-12-31"},
            "administrators": [
                {
                    "email": f"gestion.{new_event_id()[-10:]}@ccas-rouen.fr",
                    "family_name": "Leroy",
                    "given_name": "Anne",
                }
            ],
        },
    )
    assert org.status_code == 201, org.text
    email = f"as.{new_event_id()[-10:]}@ccas-rouen.fr"
    person = {"family_name": "Roux", "given_name": "Paul", "job_title": "Assistant social"}
    approval = request_approved(org.json()["id"], email, "T1", source="/system-test", applicant=person)
    await publish(system.kafka, named("access.events"), approval)
    return admin, email, org.json()


MOTIF = {"motif": "accompagnement_social"}


async def dossier_in_reach(
    system: System, client: httpx.AsyncClient, headers: dict[str, str], seed: int = 1
) -> tuple[str, str, dict[str, str], httpx.Response]:
    """Publish a dossier of department 76 on the CAF feed and look it up until the grant and the dossier
    have reached the dossiers service: (numero, lookup URL, params, the first granted response)."""
    numero = f"{7_000_000 + int(time.time() * 1000) % 999_999:07d}"
    dossier = make_dossier(random.Random(seed), build_pools(1, 50), numero, "76").model_copy(
        update={"opposition": False}
    )
    await publish(
        system.kafka,
        named("caf.dossiers"),
        ev.make_event("caf.dossier.upserted", source="/caf", subject=numero, data=dossier),
    )
    lookup = f"{system.url('dossiers')}/v1/dossiers/{numero}"
    for _ in range(100):
        r = await client.get(lookup, params=MOTIF, headers=headers)
        if r.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert r.status_code == 200, r.text
    return numero, lookup, MOTIF, r


@pytest.mark.parametrize("how", ["revoke", "suspend"])
async def test_identity_decision_denies_lookups_within_two_seconds(system: System, how: str) -> None:
    await system.start("identity", "dossiers")
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_ready(client, system.url("identity"), system.url("dossiers"))
        admin, email, _ = await provisioned_partner(system, client)
        user = await activate_and_login(client, system.url("identity"), email)
        _, lookup, params, r = await dossier_in_reach(system, client, user["headers"])
        assert r.headers["X-Audit-Id"]

        me = await client.get(f"{system.url('identity')}/v1/me", headers=user["headers"])
        grant_id = me.json()["grants"][0]["id"]
        started = time.monotonic()
        if how == "revoke":
            done = await client.post(
                f"{system.url('identity')}/v1/grants/{grant_id}/revoke", headers=admin["headers"]
            )
        else:
            done = await client.post(
                f"{system.url('identity')}/v1/users/{user['user_id']}/suspend",
                headers=admin["headers"],
                json={"reason": "test"},
            )
        assert done.status_code == 200, done.text
        while True:
            r = await client.get(lookup, params=params, headers=user["headers"])
            if r.status_code == 403:
                break
            assert r.status_code == 200
            assert time.monotonic() - started < 2.0, "still granted 2 s after the decision"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0
        assert r.json()["reason"] == ("no_grant_for_department" if how == "revoke" else "suspended")
