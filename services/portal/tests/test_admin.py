"""CAF administration pages against fake upstreams: each change is asked twice (a confirmation page that
states its effect, then the call), a refused form calls nothing, other roles get a 403 page."""

from __future__ import annotations

import json
import re

import httpx

from cdap_portal import routes_admin

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

ADMIN_ACCOUNT = {
    "id": USER_ID,
    "email": "claire.durand@ccas-rouen.fr",
    "family_name": "Durand",
    "given_name": "Claire",
    "display_name": "Claire Durand",
    "organisation_id": ORG_ID,
    "department": "76",
    "roles": ["partner_admin"],
    "status": "active",
    "locked": False,
    "must_reset_password": False,
}


async def signed_in_admin(portal: PortalClient) -> None:
    await portal.login(CAF_ADMIN)
    portal.fakes.on("identity", "GET", f"/v1/organisations/{ORG_ID}", httpx.Response(200, json=ORG))
    portal.fakes.on("identity", "GET", "/v1/grants", httpx.Response(200, json=[GRANT]))
    portal.fakes.on("identity", "GET", "/v1/users", httpx.Response(200, json={"items": [ADMIN_ACCOUNT]}))


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))


async def confirm(portal: PortalClient, path: str, data: dict[str, str]) -> httpx.Response:
    """POST the form, check a confirmation page came back with nothing sent, then confirm it."""
    token = await portal.csrf(f"/administration/organismes/{ORG_ID}")
    before = len(portal.fakes.made())
    asked = await portal.client.post(path, data={"csrf_token": token, **data})
    assert asked.status_code == 200 and "Ce que cette action va faire" in asked.text
    assert [c.method for c in portal.fakes.made()[before:] if c.method != "GET"] == []  # nothing changed yet
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
        portal,
        f"/administration/comptes/{USER_ID}/suspend",
        {"retour": f"/administration/organismes/{ORG_ID}"},
    )
    assert suspended.status_code == 303
    assert suspended.headers["location"] == f"/administration/organismes/{ORG_ID}?info=suspend"
    back = await portal.client.get(suspended.headers["location"])
    assert "Le compte est suspendu." in back.text and "Claire Durand" in back.text

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


STAFF = {
    **ADMIN_ACCOUNT,
    "id": "8f1c2d3e-aaaa-4bbb-8ccc-123456789012",
    "email": "ines.martin@caf76.fr",
    "family_name": "Martin",
    "given_name": "Inès",
    "display_name": "Inès Martin",
    "organisation_id": None,
    "roles": ["caf_instructor"],
}


async def test_the_staff_list_offers_each_accounts_actions_by_state(portal: PortalClient) -> None:
    await portal.login(CAF_ADMIN)
    pending = {**STAFF, "id": USER_ID, "display_name": "Hugo Lenoir", "status": "pending"}
    locked = {**STAFF, "locked": True}
    portal.fakes.on(
        "identity",
        "GET",
        "/v1/users",
        httpx.Response(200, json={"items": [locked, pending], "next_cursor": "n2"}),
    )
    page = await portal.client.get("/administration/comptes", params={"q": "mar", "statut": "active"})
    assert page.status_code == 200
    [call] = portal.fakes.made("identity")
    assert dict(call.request.url.params) == {"staff": "true", "q": "mar", "status": "active"}
    rows = dict(re.findall(r'<tr id="account-([0-9a-f-]+)">(.*?)</tr>', page.text, re.S))
    assert "Inès Martin" in rows[STAFF["id"]] and "Bloqué" in rows[STAFF["id"]]
    assert re.findall(r"/comptes/[0-9a-f-]+/([a-z-]+)", rows[STAFF["id"]]) == [
        "suspend",
        "unlock",
        "force-password-reset",
    ]
    assert re.findall(r"/comptes/[0-9a-f-]+/([a-z-]+)", rows[USER_ID]) == ["suspend", "resend-activation"]
    assert "page=n2" in page.text


async def test_resending_an_activation_link_is_confirmed_and_a_refusal_is_an_alert(
    portal: PortalClient,
) -> None:
    await signed_in_admin(portal)
    sent: list[str] = []

    def resend(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if len(sent) == 1:
            return httpx.Response(200, json={**STAFF, "id": USER_ID, "status": "pending"})
        return httpx.Response(409, json={"status": 409, "reason": "already_activated", "title": "Already"})

    portal.fakes.on("identity", "POST", f"/v1/users/{USER_ID}/resend-activation", resend)
    path = f"/administration/comptes/{USER_ID}/resend-activation"
    done = await confirm(portal, path, {"retour": "/administration/comptes"})
    assert (
        done.status_code == 303
        and done.headers["location"] == "/administration/comptes?info=resend-activation"
    )
    token = await portal.csrf("/administration/comptes")
    asked = await portal.client.post(path, data={"csrf_token": token, "retour": "/administration/comptes"})
    assert (
        "Compte de Claire Durand." in asked.text
        and "les liens envoyés avant ne fonctionnent plus" in asked.text
    )
    refused = await portal.client.post(path, data=hidden_fields(asked.text))
    assert refused.status_code == 409 and "fr-alert" in refused.text and "déjà activé" in refused.text
    assert len(sent) == 2


CLIENT = {
    "client_id": "cl-rouen-1",
    "name": "Logiciel RSA",
    "organisation_id": ORG_ID,
    "grant_id": GRANT_ID,
    "created_by": USER_ID,
    "created_at": "2026-11-02T09:30:00Z",
    "disabled": False,
}


async def test_the_organisation_s_clients_are_listed_and_disabling_one_says_what_it_does(
    portal: PortalClient,
) -> None:
    await signed_in_admin(portal)
    portal.fakes.on("identity", "GET", "/v1/clients", httpx.Response(200, json=[CLIENT]))
    page = await portal.client.get(f"/administration/organismes/{ORG_ID}")
    assert page.status_code == 200 and '<table id="clients">' in page.text
    assert "Logiciel RSA" in page.text and "cl-rouen-1" in page.text
    [listed] = [c for c in portal.fakes.made("identity") if c.path == "/v1/clients"]
    assert listed.request.url.params["organisation"] == ORG_ID
    # The form carries the client's name and the way back; the confirmation names the client and the effect.
    form = page.text[page.text.index('action="/administration/clients/cl-rouen-1/disable"') :]
    fields = hidden_fields(form[: form.index("</form>")])
    assert fields["organisation"] == ORG_ID and fields["name"] == "Logiciel RSA"

    portal.fakes.on(
        "identity",
        "POST",
        "/v1/clients/cl-rouen-1/disable",
        httpx.Response(200, json=CLIENT | {"disabled": True}),
    )
    token = await portal.csrf(f"/administration/organismes/{ORG_ID}")
    asked = await portal.client.post(
        "/administration/clients/cl-rouen-1/disable", data=fields | {"csrf_token": token}
    )
    assert asked.status_code == 200 and "Client « Logiciel RSA »" in asked.text
    assert "ne pourra plus obtenir de jeton" in asked.text
    assert [c for c in portal.fakes.made() if c.method == "POST"] == []
    done = await portal.client.post(
        "/administration/clients/cl-rouen-1/disable", data=hidden_fields(asked.text)
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/administration/organismes/{ORG_ID}?info=client-desactive"
    assert [c.path for c in portal.fakes.made() if c.method == "POST"] == ["/v1/clients/cl-rouen-1/disable"]
    back = await portal.client.get(done.headers["location"])
    assert "Le client est désactivé" in back.text


async def test_every_administration_action_has_its_own_route(portal: PortalClient) -> None:
    """No generic `/{action}` route: an unknown action is no page at all, and calls nothing."""
    await signed_in_admin(portal)
    token = await portal.csrf(f"/administration/organismes/{ORG_ID}")
    for path in (
        f"/administration/comptes/{USER_ID}/delete",
        f"/administration/organismes/{ORG_ID}/supprimer",
        "/administration/clients/cl-1/rotate",
    ):
        r = await portal.client.post(path, data={"csrf_token": token, "confirme": "oui"})
        assert r.status_code in (404, 405), path
    assert [c for c in portal.fakes.made() if c.method != "GET"] == []
    routes = {getattr(r, "path", "") for r in routes_admin.router.routes}
    for action in ("suspend", "reinstate", "unlock", "force-password-reset", "resend-activation"):
        assert f"/administration/comptes/{{user_id}}/{action}" in routes
