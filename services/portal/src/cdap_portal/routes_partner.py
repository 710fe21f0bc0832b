"""Partner administrators' own administration: their organisation's habilitations (end one: a removal
request the CAF's services carry out), the message thread of a request, and partner-system clients
(create with the secret shown once, rotate, disable).

Clients use identity's `GET /v1/clients?organisation=`, `POST /v1/clients`, `POST /v1/clients/{id}/rotate`
and `POST /v1/clients/{id}/disable`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cdap_portal import domain
from cdap_portal.auth import UserApi, Viewer
from cdap_portal.clients import checked
from cdap_portal.routes_admin import (
    ACCOUNT_ACTIONS,
    ClientId,
    confirmed_account_action,
    confirmed_client_disable,
    organisation_clients,
)
from cdap_portal.routes_requests import AccountId, GrantId, MailRecipient, PartnerAdmin, RequestId
from cdap_portal.web import CsrfForm, confirmed, field, redirect, render

router = APIRouter(tags=["partenaire"])
GRANTS = "/habilitations"
CLIENTS = "/habilitations/clients"
INFOS = {
    "fin": "La fin de l'habilitation est demandée : elle sera révoquée dans les secondes qui suivent.",
    "client-desactive": "Le client est désactivé : ses jetons sont refusés.",
    "resend-activation": ACCOUNT_ACTIONS["resend-activation"][2],
}
# The one account action a partner administrator has: a new activation link for a colleague.
PARTNER_ACCOUNT_ACTIONS = {"resend-activation": ACCOUNT_ACTIONS["resend-activation"]}


@router.get(GRANTS)
async def grants_page(
    request: Request, api: UserApi, info: str = "", viewer: Viewer = PartnerAdmin
) -> Response:
    """The organisation's habilitations, the ones in force first, with their end dates and holders' names,
    and its accounts (a new activation link for those not activated yet)."""
    grants = (await api.json("identity", "GET", "/v1/grants"))["items"]
    grants.sort(key=lambda g: (g.get("status") != "active", g.get("valid_until", "")))
    accounts = (await api.json("identity", "GET", "/v1/users", params={"limit": 200})).get("items", [])
    return render(
        request,
        "partner_grants.html",
        grants=grants,
        accounts=accounts,
        names={str(a["id"]): a["display_name"] for a in accounts},
        actions=PARTNER_ACCOUNT_ACTIONS,
        notice=INFOS.get(info),
    )


@router.post(GRANTS + "/comptes/{user_id}/resend-activation")
async def resend_activation(
    request: Request, form: CsrfForm, api: UserApi, user_id: AccountId, viewer: Viewer = PartnerAdmin
) -> Response:
    """A new activation link for a colleague who has not activated their account (confirmed first)."""
    return await confirmed_account_action(request, form, api, user_id, "resend-activation", GRANTS)


@router.post(GRANTS + "/{grant_id}/fin")
async def end_grant(
    request: Request, form: CsrfForm, api: UserApi, grant_id: GrantId, viewer: Viewer = PartnerAdmin
) -> Response:
    """Ask that a habilitation end now (access-requests forwards the removal; identity revokes it)."""

    async def act() -> Response:
        comment = field(form, "comment", 1000)
        response = await api.call(
            "access",
            "POST",
            f"/v1/grants/{grant_id}/removal-requests",
            json={"comment": comment} if comment else None,
        )
        checked("access", response)
        return redirect(f"{GRANTS}?info=fin")

    return await confirmed(
        request,
        form,
        "Mettre fin à l'habilitation",
        "L'habilitation prend fin : son titulaire ne pourra plus consulter de dossier avec elle, dans les "
        "secondes qui suivent. Pour un nouvel accès, il faudra une nouvelle demande.",
        act,
        back=GRANTS,
    )


@router.post("/demandes/{request_id}/message")
async def post_message(
    request: Request, form: CsrfForm, api: UserApi, request_id: RequestId, viewer: Viewer = MailRecipient
) -> Response:
    """A message in the request's thread, between the partner and the department's CAF."""
    page = (
        f"/instruction/{request_id}"
        if viewer.has("caf_instructor", "caf_manager")
        else f"/demandes/{request_id}"
    )
    text = field(form, "text", 2000)
    if not text:
        return redirect(f"{page}?info=message-vide")
    checked(
        "access",
        await api.call("access", "POST", f"/v1/access-requests/{request_id}/comments", json={"text": text}),
    )
    return redirect(f"{page}?info=message")


# ------------------------------------------------------------------------------ partner-system clients


async def _clients_page(
    request: Request, api: UserApi, viewer: Viewer, status: int = 200, **context: Any
) -> Response:
    clients = await organisation_clients(api, viewer.org or "")
    grants = [
        g for g in (await api.json("identity", "GET", "/v1/grants"))["items"] if g.get("status") == "active"
    ]
    context.setdefault("errors", {})
    context.setdefault("values", {})
    context |= {"clients": clients or [], "grants": grants, "unavailable": clients is None}
    return render(request, "partner_clients.html", status=status, **context)


@router.get(CLIENTS)
async def clients_page(
    request: Request, api: UserApi, info: str = "", viewer: Viewer = PartnerAdmin
) -> Response:
    return await _clients_page(request, api, viewer, notice=INFOS.get(info))


@router.post(CLIENTS)
async def create_client(
    request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = PartnerAdmin
) -> Response:
    """A partner system's credentials for one habilitation; the secret is shown on this page only."""
    values = {"grant_id": field(form, "grant_id", 64), "name": field(form, "name", 100)}
    errors = domain.check_client(values)
    if errors:
        return await _clients_page(request, api, viewer, status=400, errors=errors, values=values)
    created = checked("identity", await api.call("identity", "POST", "/v1/clients", json=values))
    return await _clients_page(request, api, viewer, status=201, secret=created, values={})


@router.post(CLIENTS + "/{client_id}/rotate")
async def rotate_client(
    request: Request, form: CsrfForm, api: UserApi, client_id: ClientId, viewer: Viewer = PartnerAdmin
) -> Response:
    """A new secret for a client, shown once; the old one stops working (confirmed first)."""

    async def act() -> Response:
        path = f"/v1/clients/{client_id}/rotate"
        answer = checked("identity", await api.call("identity", "POST", path))
        return await _clients_page(request, api, viewer, secret=answer)

    return await confirmed(
        request,
        form,
        "Renouveler le secret",
        "Un nouveau secret est créé et affiché une seule fois ; l'ancien ne fonctionne plus : mettez à jour "
        "le système aussitôt.",
        act,
        back=CLIENTS,
    )


@router.post(CLIENTS + "/{client_id}/disable")
async def disable_client(
    request: Request, form: CsrfForm, api: UserApi, client_id: ClientId, viewer: Viewer = PartnerAdmin
) -> Response:
    """Disable a client of the organisation (confirmed first)."""
    return await confirmed_client_disable(request, form, api, client_id, CLIENTS)
