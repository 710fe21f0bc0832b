"""Partner administrators' pages against fake upstreams: ending a habilitation (confirmed, then a removal
request to access-requests), the message thread, partner-system clients (secret shown once)."""

from __future__ import annotations

import json

import httpx

from .conftest import PARTNER_ADMIN, PortalClient
from .test_admin import ADMIN_ACCOUNT, GRANT, GRANT_ID, confirm, hidden_fields

REQUEST_ID = "0196f3a0-0000-7000-8000-000000000001"
CLIENT = {
    "client_id": "cl-1",
    "name": "Logiciel de gestion locative",
    "grant_id": GRANT_ID,
    "status": "active",
}


async def signed_in(portal: PortalClient) -> None:
    await portal.login(PARTNER_ADMIN)
    ended = {**GRANT, "id": "8f1c2d3e-aaaa-4bbb-8ccc-123456789012", "status": "revoked"}
    portal.fakes.on("identity", "GET", "/v1/grants", httpx.Response(200, json=[ended, GRANT]))
    portal.fakes.on("identity", "GET", "/v1/users", httpx.Response(200, json={"items": ACCOUNTS}))


HOLDER = {**ADMIN_ACCOUNT, "id": GRANT["user_id"], "display_name": "Jules Petit", "roles": ["partner_user"]}
NEWCOMER = {
    **ADMIN_ACCOUNT,
    "id": "9f1c2d3e-aaaa-4bbb-8ccc-123456789012",
    "display_name": "Nora Haddad",
    "status": "pending",
}
ACCOUNTS = [HOLDER, NEWCOMER]


async def test_the_organisation_s_grants_in_force_first_and_ending_one(portal: PortalClient) -> None:
    await signed_in(portal)
    page = await portal.client.get("/habilitations")
    assert page.status_code == 200
    assert page.text.index("En cours") < page.text.index("Révoquée") and "31 décembre 2026" in page.text
    assert page.text.count("Mettre fin<") == 1  # only the grant in force can be ended
    assert "<td>Jules Petit</td>" in page.text  # the holder by name

    removals: list[object] = []

    def removal(request: httpx.Request) -> httpx.Response:
        removals.append(json.loads(request.content) if request.content else None)
        return httpx.Response(202, json={"id": "rm-1", "grant_id": GRANT_ID, "state": "requested"})

    portal.fakes.on("access", "POST", f"/v1/grants/{GRANT_ID}/removal-requests", removal)
    done = await confirm(portal, f"/habilitations/{GRANT_ID}/fin", {"retour": "/habilitations"})
    assert done.status_code == 303 and done.headers["location"] == "/habilitations?info=fin"
    assert removals == [None]


async def test_a_message_goes_to_the_request_s_thread(portal: PortalClient) -> None:
    await signed_in(portal)
    sent: list[object] = []
    portal.fakes.on(
        "access",
        "POST",
        f"/v1/access-requests/{REQUEST_ID}/comments",
        lambda r: sent.append(json.loads(r.content)) or httpx.Response(201, json={}),
    )
    token = await portal.csrf("/habilitations")
    r = await portal.client.post(
        f"/demandes/{REQUEST_ID}/message", data={"csrf_token": token, "text": "Bonjour"}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/demandes/{REQUEST_ID}?info=message"
    assert sent == [{"text": "Bonjour"}]
    empty = await portal.client.post(
        f"/demandes/{REQUEST_ID}/message", data={"csrf_token": token, "text": " "}
    )
    assert empty.headers["location"].endswith("info=message-vide") and len(sent) == 1


async def test_a_client_s_secret_is_shown_once_and_rotating_asks_first(portal: PortalClient) -> None:
    await signed_in(portal)
    portal.fakes.on("identity", "GET", "/v1/clients", httpx.Response(200, json=[CLIENT]))
    portal.fakes.on(
        "identity",
        "POST",
        "/v1/clients",
        httpx.Response(201, json={"client_id": "cl-2", "client_secret": "s3cr3t-once", "grant_id": GRANT_ID}),
    )
    listed = await portal.client.get("/habilitations/clients")
    assert "Logiciel de gestion locative" in listed.text and "s3cr3t" not in listed.text
    [call] = [c for c in portal.fakes.made("identity") if c.path == "/v1/clients"]
    assert call.request.url.params["organisation"] == PARTNER_ADMIN["org"]

    token = await portal.csrf("/habilitations/clients")
    created = await portal.client.post(
        "/habilitations/clients", data={"csrf_token": token, "name": "SI", "grant_id": GRANT_ID}
    )
    assert created.status_code == 201 and 'id="secret-value">s3cr3t-once<' in created.text
    assert "s3cr3t-once" not in (await portal.client.get("/habilitations/clients")).text  # never again

    portal.fakes.on(
        "identity",
        "POST",
        "/v1/clients/cl-1/rotate",
        httpx.Response(200, json={"client_id": "cl-1", "client_secret": "n3w"}),
    )
    rotated = await confirm(
        portal, "/habilitations/clients/cl-1/rotate", {"retour": "/habilitations/clients"}
    )
    assert rotated.status_code == 200 and 'id="secret-value">n3w<' in rotated.text


async def test_the_clients_page_says_when_identity_does_not_list_clients_yet(portal: PortalClient) -> None:
    await signed_in(portal)  # no fake for GET /v1/clients: the fakes answer 404
    page = await portal.client.get("/habilitations/clients")
    assert page.status_code == 200 and 'id="clients-unavailable"' in page.text


async def test_a_partner_admin_resends_a_colleague_s_activation_link(portal: PortalClient) -> None:
    await signed_in(portal)
    page = await portal.client.get("/habilitations")
    path = f"/habilitations/comptes/{NEWCOMER['id']}/resend-activation"
    assert page.text.count("Renvoyer le lien d&#39;activation<") == 1 and f'action="{path}"' in page.text
    resent: list[str] = []
    portal.fakes.on(
        "identity",
        "POST",
        f"/v1/users/{NEWCOMER['id']}/resend-activation",
        lambda r: resent.append(r.url.path) or httpx.Response(200, json=NEWCOMER),
    )
    done = await confirm(portal, path, {"retour": "/habilitations"})
    assert done.status_code == 303 and done.headers["location"] == "/habilitations?info=resend-activation"
    assert len(resent) == 1
    shown = await portal.client.get(done.headers["location"])
    assert "Un nouveau lien d&#39;activation a été envoyé." in shown.text

    # Identity's refusal (another organisation's account) is an alert, never a 500.
    portal.fakes.on(
        "identity",
        "POST",
        f"/v1/users/{NEWCOMER['id']}/resend-activation",
        httpx.Response(404, json={"status": 404, "title": "Unknown account"}),
    )
    token = await portal.csrf("/habilitations")
    asked = await portal.client.post(path, data={"csrf_token": token})
    assert "Compte de Nora Haddad." in asked.text
    refused = await portal.client.post(path, data=hidden_fields(asked.text))
    assert refused.status_code == 404 and "fr-alert" in refused.text
