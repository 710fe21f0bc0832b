"""CAF administration pages against fake upstreams: each change is asked twice (a confirmation page that
states its effect, then the call), a refused form calls nothing, other roles get a 403 page."""

from __future__ import annotations

import json
import re

import httpx

from .conftest import INSTRUCTOR, PortalClient

CAF_ADMIN = {"sub": "cadm", "email": "admin@caf.fr", "roles": ["caf_admin"], "department": "76"}
ORG_ID = "3f1c2d3e-aaaa-4bbb-8ccc-123456789012"
USER_ID = "5f1c2d3e-aaaa-4bbb-8ccc-123456789012"
GRANT_ID = "6f1c2d3e-aaaa-4bbb-8ccc-123456789012"
ORG = {
    "id": ORG_ID,
    "siret": "73282932000074",
    "name": "CCAS de Rouen",
    "kind": "ccas",
    "department": "76",
    "convention_reference": "CONV-76-0074",
    "convention_valid_until": "2026-01-31",
    "delegation_withdrawn": False,
    "administrators": [USER_ID],
}
GRANT = {
    "id": GRANT_ID,
    "user_id": "7f1c2d3e-aaaa-4bbb-8ccc-123456789012",
    "organisation_id": ORG_ID,
    "profile": "T1",
    "department": "76",
    "valid_from": "2026-01-01",
    "valid_until": "2026-12-31",
    "status": "active",
    "request_id": None,
}


async def signed_in_admin(portal: PortalClient) -> None:
    await portal.login(CAF_ADMIN)
    portal.fakes.on("identity", "GET", f"/v1/organisations/{ORG_ID}", httpx.Response(200, json=ORG))
    portal.fakes.on("identity", "GET", "/v1/grants", httpx.Response(200, json=[GRANT]))


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))


async def confirm(portal: PortalClient, path: str, data: dict[str, str]) -> httpx.Response:
    """POST the form, check a confirmation page came back with nothing sent, then confirm it."""
    token = await portal.csrf(f"/administration/organismes/{ORG_ID}")
    before = len(portal.fakes.made())
    asked = await portal.client.post(path, data={"csrf_token": token, **data})
    assert asked.status_code == 200 and "Ce que cette action va faire" in asked.text
    assert [c.method for c in portal.fakes.made()[before:]] == []  # nothing changed yet
    back = data.get("retour", "/")
    assert f'href="{back}">Annuler</a>' in asked.text  # the way back without acting (local pages only)
    return await portal.client.post(path, data=hidden_fields(asked.text))


async def test_the_organisations_are_searched_by_name_or_siret_and_department(portal: PortalClient) -> None:
    await signed_in_admin(portal)
    portal.fakes.on("identity", "GET", "/v1/organisations", httpx.Response(200, json=[ORG]))
    page = await portal.client.get("/administration/organismes", params={"q": "rouen", "departement": "76"})
    assert page.status_code == 200
    [call] = [c for c in portal.fakes.made() if c.path == "/v1/organisations"]
    assert dict(call.request.url.params) == {"q": "rouen", "department": "76"}
    assert "CCAS de Rouen" in page.text and "Expirée" in page.text  # the convention ended in January

    wrong = await portal.client.get("/administration/organismes", params={"departement": "999"})
    assert wrong.status_code == 400 and "Code de département invalide" in wrong.text
    assert len([c for c in portal.fakes.made() if c.path == "/v1/organisations"]) == 1


async def test_renewing_a_convention_is_confirmed_then_sent(portal: PortalClient) -> None:
    await signed_in_admin(portal)
    patched: list[dict[str, object]] = []

    def patch(request: httpx.Request) -> httpx.Response:
        patched.append(json.loads(request.content))
        return httpx.Response(200, json={**ORG, "convention_valid_until": "2031-12-31"})

    portal.fakes.on("identity", "PATCH", f"/v1/organisations/{ORG_ID}", patch)
    done = await confirm(
        portal,
        f"/administration/organismes/{ORG_ID}/convention",
        {
            "reference": "CONV-76-0075",
            "valid_until": "2031-12-31",
            "retour": f"/administration/organismes/{ORG_ID}",
        },
    )
    assert done.status_code == 303 and done.headers["location"].endswith("?info=convention")
    assert patched == [{"convention": {"reference": "CONV-76-0075", "valid_until": "2031-12-31"}}]


async def test_a_convention_in_the_past_is_refused_before_anything_is_sent(portal: PortalClient) -> None:
    await signed_in_admin(portal)
    token = await portal.csrf(f"/administration/organismes/{ORG_ID}")
    r = await portal.client.post(
        f"/administration/organismes/{ORG_ID}/convention",
        data={"csrf_token": token, "reference": "CONV", "valid_until": "2020-01-01"},
    )
    assert r.status_code == 400 and "La convention doit se terminer après aujourd&#39;hui." in r.text
    assert [c for c in portal.fakes.made() if c.method != "GET"] == []


async def test_suspending_an_account_then_revoking_a_grant(portal: PortalClient) -> None:
    await signed_in_admin(portal)
    portal.fakes.on(
        "identity",
        "POST",
        f"/v1/users/{USER_ID}/suspend",
        httpx.Response(
            200,
            json={
                "id": USER_ID,
                "email": "c@x.fr",
                "organisation_id": ORG_ID,
                "roles": [],
                "status": "suspended",
            },
        ),
    )
    suspended = await confirm(
        portal, f"/administration/comptes/{USER_ID}/suspend", {"retour": "/administration/comptes"}
    )
    assert suspended.status_code == 200 and "Le compte est suspendu." in suspended.text
    assert 'id="account-status">Suspendu<' in suspended.text

    portal.fakes.on("identity", "POST", f"/v1/grants/{GRANT_ID}/revoke", httpx.Response(200, json=GRANT))
    revoked = await confirm(
        portal,
        f"/administration/habilitations/{GRANT_ID}/revocation",
        {"organisation": ORG_ID, "retour": "/x"},
    )
    assert (
        revoked.status_code == 303
        and revoked.headers["location"] == f"/administration/organismes/{ORG_ID}?info=revoquee"
    )
    posted = [c.path for c in portal.fakes.made() if c.method == "POST" and c.service == "identity"]
    assert posted[-2:] == [f"/v1/users/{USER_ID}/suspend", f"/v1/grants/{GRANT_ID}/revoke"]


async def test_the_administration_is_for_caf_admins_only(portal: PortalClient) -> None:
    await portal.login(INSTRUCTOR)
    for path in (
        "/administration/organismes",
        "/administration/comptes",
        f"/administration/organismes/{ORG_ID}",
    ):
        page = await portal.client.get(path)
        assert page.status_code == 403, path
    assert portal.fakes.made() == []
