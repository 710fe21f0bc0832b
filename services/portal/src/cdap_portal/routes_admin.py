"""CAF administrators (role `caf_admin`): partner organisations and their conventions, delegation, their
grants, and CAF staff accounts.

Every action that changes something is asked twice (`web.confirmation`): the first POST answers a page
that says what will happen; only the POST from that page calls identity. Identity records each change as
an event, which the audit log keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from cdap_portal import domain, texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import ApiError, checked, json_of
from cdap_portal.routes_requests import (
    UUID,
    AccountId,
    GrantId,
    OrganisationId,
    account_names,
)
from cdap_portal.web import CsrfForm, confirmed, error_page, field, redirect, render
from cdap_shared.clock import civil_today

router = APIRouter(tags=["administration"])
CafAdmin = require("caf_admin")

ORGS = "/administration/organismes"
STAFF = "/administration/comptes"
ClientId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
INFOS = {
    "cree": "L'organisme est enregistré ; ses gestionnaires reçoivent un courriel d'activation.",
    "modifie": "L'organisme est modifié.",
    "convention": "La convention est enregistrée : les demandes de l'organisme sont de nouveau acceptées.",
    "delegation-retiree": "La délégation est retirée : les gestionnaires de l'organisme ne peuvent plus "
    "demander d'accès ni créer de clients.",
    "delegation-rendue": "La délégation est rendue à l'organisme.",
    "revoquee": "L'habilitation est révoquée : toute consultation est refusée dans les secondes qui suivent.",
    "client-desactive": "Le client est désactivé : ses jetons sont refusés.",
}
ACCOUNT_ACTIONS = {
    "suspend": (
        "Suspendre le compte",
        "La personne ne pourra plus se connecter ; ses sessions en cours sont refusées dans les secondes "
        "qui suivent. Le compte peut être rétabli.",
        "Le compte est suspendu.",
    ),
    "reinstate": (
        "Rétablir le compte",
        "La personne pourra de nouveau se connecter avec son mot de passe.",
        "Le compte est rétabli.",
    ),
    "unlock": (
        "Débloquer le compte",
        "Les échecs de connexion sont oubliés : la personne peut réessayer tout de suite.",
        "Le compte est débloqué.",
    ),
    "force-password-reset": (
        "Imposer un nouveau mot de passe",
        "Le mot de passe actuel ne fonctionne plus ; la personne reçoit un courriel pour en choisir un "
        "nouveau.",
        "Un courriel de réinitialisation a été envoyé.",
    ),
    "resend-activation": (
        "Renvoyer le lien d'activation",
        "Un nouveau courriel d'activation part à la personne ; les liens envoyés avant ne fonctionnent plus.",
        "Un nouveau lien d'activation a été envoyé.",
    ),
}
# After an account action, the page it came from says what was done (`?info=<action>`).
INFOS |= {action: done for action, (_, _, done) in ACCOUNT_ACTIONS.items()}
INFOS["compte-cree"] = "Le compte est créé ; un courriel d'activation est envoyé à la personne."
KINDS = texts.ORGANISATION_KINDS


def _problem_text(error: ApiError) -> str:
    detail = error.body.get("detail") or error.body.get("title") or ""
    return f"Identity a refusé : {detail}" if detail else "La demande a été refusée."


# ------------------------------------------------------------------------------------------ organisations


@router.get(ORGS)
async def organisations(
    request: Request, api: UserApi, q: str = "", departement: str = "", viewer: Viewer = CafAdmin
) -> Response:
    values = {"q": q.strip()[:100], "departement": departement.strip()}
    params = {"q": values["q"]} if values["q"] else {}
    errors = domain.check_organisation_search(values)
    if values["departement"] and not errors:
        params["department"] = values["departement"]
    listing = (
        [] if errors else (await api.json("identity", "GET", "/v1/organisations", params=params))["items"]
    )
    return render(
        request,
        "admin_orgs.html",
        status=400 if errors else 200,
        items=listing,
        values=values,
        errors=errors,
        kinds=KINDS,
        today=civil_today().isoformat(),
    )


def _org_values(form: FormData) -> dict[str, str]:
    names = ("siret", "name", "kind", "department", "reference", "valid_until")
    return {k: field(form, k, 200) for k in (*names, "email", "family_name", "given_name")}


@router.get(ORGS + "/nouveau")
async def new_organisation_page(request: Request, viewer: Viewer = CafAdmin) -> Response:
    return render(request, "admin_org_new.html", values={}, errors={}, kinds=KINDS)


@router.post(ORGS + "/nouveau")
async def create_organisation(
    request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = CafAdmin
) -> Response:
    values = _org_values(form)
    errors = domain.check_organisation(values, civil_today(), creating=True)
    if errors:
        return render(request, "admin_org_new.html", status=400, values=values, errors=errors, kinds=KINDS)
    body = {
        "siret": values["siret"],
        "name": values["name"],
        "kind": values["kind"],
        "department": values["department"],
        "convention": {"reference": values["reference"], "valid_until": values["valid_until"]},
        "administrators": [{k: values[k] for k in ("email", "family_name", "given_name")}],
    }
    response = await api.call("identity", "POST", "/v1/organisations", json=body)
    if response.status_code == 201:
        return redirect(f"{ORGS}/{response.json()['id']}?info=cree")
    error = ApiError("identity", response.status_code, response.json() if response.content else {})
    if response.status_code >= 500:
        raise error
    failure = (
        "Un organisme avec ce SIRET existe déjà." if response.status_code == 409 else _problem_text(error)
    )
    return render(
        request, "admin_org_new.html", status=400, values=values, errors={}, kinds=KINDS, failure=failure
    )


async def _org_page(
    request: Request, api: UserApi, organisation_id: str, status: int = 200, **context: Any
) -> Response:
    org = await api.json("identity", "GET", f"/v1/organisations/{organisation_id}")
    grants = (await api.json("identity", "GET", "/v1/grants"))["items"]
    users = await api.json(
        "identity", "GET", "/v1/users", params={"organisation": organisation_id, "limit": 200}
    )
    context.setdefault("errors", {})
    clients = await organisation_clients(api, organisation_id)
    return render(
        request,
        "admin_org.html",
        clients=clients or [],
        clients_unavailable=clients is None,
        status=status,
        org=org,
        accounts=users.get("items", []),
        names={str(u["id"]): u["display_name"] for u in users.get("items", [])},
        actions=ACCOUNT_ACTIONS,
        grants=[g for g in grants if g.get("organisation_id") == organisation_id],
        kinds=KINDS,
        today=civil_today().isoformat(),
        **context,
    )


async def organisation_clients(api: UserApi, organisation_id: str) -> list[dict[str, Any]] | None:
    """The organisation's partner-system clients (never their secrets); None when identity does not
    serve the list (an older identity)."""
    try:
        listing = await api.json("identity", "GET", "/v1/clients", params={"organisation": organisation_id})
    except ApiError as exc:
        if exc.status not in (404, 405):
            raise
        return None
    items: list[dict[str, Any]] = listing.get("items", [])
    return items


@router.get(ORGS + "/{organisation_id}")
async def organisation(
    request: Request, api: UserApi, organisation_id: OrganisationId, info: str = "", viewer: Viewer = CafAdmin
) -> Response:
    return await _org_page(request, api, organisation_id, notice=INFOS.get(info))


async def _amend(
    request: Request, api: UserApi, organisation_id: str, body: dict[str, Any], info: str
) -> Response:
    response = await api.call("identity", "PATCH", f"/v1/organisations/{organisation_id}", json=body)
    if response.is_success:
        return redirect(f"{ORGS}/{organisation_id}?info={info}")
    error = ApiError("identity", response.status_code, response.json() if response.content else {})
    if response.status_code >= 500 or response.status_code == 404:
        raise error
    failure = (
        "La convention doit se terminer après aujourd'hui."
        if error.reason == "convention_ended"
        else _problem_text(error)
    )
    return await _org_page(request, api, organisation_id, status=400, failure=failure)


@router.post(ORGS + "/{organisation_id}/modifier")
async def amend_organisation(
    request: Request, form: CsrfForm, api: UserApi, organisation_id: OrganisationId, viewer: Viewer = CafAdmin
) -> Response:
    """Rename the organisation or change its kind (confirmed first)."""
    return await _confirmed_amendment(request, form, api, organisation_id, domain.renaming)


@router.post(ORGS + "/{organisation_id}/convention")
async def renew_convention(
    request: Request, form: CsrfForm, api: UserApi, organisation_id: OrganisationId, viewer: Viewer = CafAdmin
) -> Response:
    """Renew or amend the organisation's convention (confirmed first)."""
    return await _confirmed_amendment(request, form, api, organisation_id, domain.convention_change)


async def _confirmed_amendment(
    request: Request,
    form: FormData,
    api: UserApi,
    organisation_id: str,
    amendment: Callable[[dict[str, str], date], domain.Amendment | dict[str, str]],
) -> Response:
    """The form's amendment, once confirmed; the organisation's page with the form's errors otherwise."""
    values = _org_values(form)
    change = amendment(values, civil_today())
    if not isinstance(change, domain.Amendment):
        return await _org_page(request, api, organisation_id, status=400, errors=change, values=values)
    return await confirmed(
        request,
        form,
        change.title,
        change.effect,
        lambda: _amend(request, api, organisation_id, change.body, change.info),
    )


@router.post(ORGS + "/{organisation_id}/delegation")
async def change_delegation(
    request: Request, form: CsrfForm, api: UserApi, organisation_id: OrganisationId, viewer: Viewer = CafAdmin
) -> Response:
    """Withdraw (`action=retirer`) or restore the organisation's delegated administration (confirmed)."""
    withdraw = field(form, "action") == "retirer"

    async def act() -> Response:
        action = "withdraw-delegation" if withdraw else "restore-delegation"
        path = f"/v1/organisations/{organisation_id}/{action}"
        checked("identity", await api.call("identity", "POST", path))
        return redirect(f"{ORGS}/{organisation_id}?info=delegation-{'retiree' if withdraw else 'rendue'}")

    return await confirmed(
        request,
        form,
        "Retirer la délégation" if withdraw else "Rendre la délégation",
        (
            "Les gestionnaires de l'organisme ne pourront plus demander d'accès ni créer de clients ; la "
            "CAF administre l'organisme à leur place. Les habilitations en cours restent valables."
        )
        if withdraw
        else "Les gestionnaires de l'organisme pourront de nouveau demander des accès et créer des clients.",
        act,
    )


@router.post("/administration/habilitations/{grant_id}/revocation")
async def revoke_grant(
    request: Request, form: CsrfForm, api: UserApi, grant_id: GrantId, viewer: Viewer = CafAdmin
) -> Response:
    back = _organisation_page(form)

    async def act() -> Response:
        reason = field(form, "reason", 500)
        response = await api.call(
            "identity", "POST", f"/v1/grants/{grant_id}/revoke", json={"reason": reason} if reason else None
        )
        checked("identity", response)
        return redirect(f"{back}?info=revoquee")

    return await confirmed(
        request,
        form,
        "Révoquer l'habilitation",
        "L'habilitation prend fin maintenant : toute consultation avec elle est refusée dans les secondes "
        "qui suivent. Cette action est définitive (une nouvelle demande sera nécessaire).",
        act,
    )


def _organisation_page(form: FormData) -> str:
    """The organisation's page the form came from (its `organisation` field), else the list."""
    organisation_id = field(form, "organisation", 64)
    return f"{ORGS}/{organisation_id}" if re.fullmatch(UUID, organisation_id) else ORGS


@router.post("/administration/clients/{client_id}/disable")
async def disable_client(
    request: Request, form: CsrfForm, api: UserApi, client_id: ClientId, viewer: Viewer = CafAdmin
) -> Response:
    """Disable one of an organisation's partner-system clients (confirmed first), back to its page."""
    return await confirmed_client_disable(request, form, api, client_id, _organisation_page(form))


async def confirmed_client_disable(
    request: Request, form: FormData, api: UserApi, client_id: str, back: str
) -> Response:
    """The confirmation stating what disabling a client does; once confirmed, identity disables it (an
    `identity.client.disabled` event, which the audit log keeps) and `back` says so."""

    async def act() -> Response:
        checked("identity", await api.call("identity", "POST", f"/v1/clients/{client_id}/disable"))
        return redirect(f"{back}?info=client-desactive")

    name = field(form, "name", 100)
    return await confirmed(
        request,
        form,
        "Désactiver le client",
        (f"Client « {name} ». " if name else "")
        + "Le système ne pourra plus obtenir de jeton ; ses jetons en cours sont refusés dans les secondes "
        "qui suivent. Un client désactivé ne peut pas être réactivé : il faudra en créer un autre.",
        act,
        back=back,
    )


# ------------------------------------------------------------------------------------------ staff accounts

STAFF_ROLES = ("caf_instructor", "caf_manager", "caf_admin", "auditor")


def _staff_page(request: Request, values: dict[str, str], status: int = 200, **context: Any) -> Response:
    """The staff page: the creation form (with `values`) and the list (`users`, `search`...)."""
    context.setdefault("errors", {})
    context.setdefault("users", [])
    context.setdefault("search", {"q": "", "statut": ""})
    return render(
        request, "admin_staff.html", status=status, values=values, roles=STAFF_ROLES, actions=ACCOUNT_ACTIONS,
        **context,
    )  # fmt: skip


@router.get(STAFF)
async def staff_page(
    request: Request,
    api: UserApi,
    q: str = "",
    statut: str = "",
    page: str = "",
    info: str = "",
    viewer: Viewer = CafAdmin,
) -> Response:
    """CAF staff accounts by name (search by part of a name or e-mail, filter by state), each with the
    actions its state allows, and the form to create one."""
    search = {"q": q.strip()[:100], "statut": statut if statut in texts.ACCOUNT_STATES else ""}
    params = {"staff": "true", "q": search["q"], "status": search["statut"], "cursor": page}
    listing = await api.json("identity", "GET", "/v1/users", params={k: v for k, v in params.items() if v})
    return _staff_page(
        request,
        {"department": viewer.department or ""},
        users=listing.get("items", []),
        next_cursor=listing.get("next_cursor"),
        search=search,
        notice=INFOS.get(info),
    )


@router.post(STAFF)
async def create_staff(request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = CafAdmin) -> Response:
    values = {k: field(form, k, 200) for k in ("email", "family_name", "given_name", "department")}
    roles = [r for r in form.getlist("roles") if r in STAFF_ROLES]
    errors = domain.check_staff_account(values, roles)
    if errors:
        return _staff_page(request, values, status=400, errors=errors)
    response = await api.call("identity", "POST", "/v1/users", json={**values, "roles": roles})
    if response.status_code != 201:
        error = ApiError("identity", response.status_code, response.json() if response.content else {})
        if response.status_code >= 500:
            raise error
        failure = (
            "Un compte existe déjà avec cette adresse."
            if response.status_code == 409
            else _problem_text(error)
        )
        return _staff_page(request, values, status=400, failure=failure)
    return redirect(f"{STAFF}?info=compte-cree&q={quote(values['email'])}")


def _account_route(action: str) -> None:
    """`POST /administration/comptes/{user_id}/<action>`, one explicit route per account action."""

    async def account_action(
        request: Request, form: CsrfForm, api: UserApi, user_id: AccountId, viewer: Viewer = CafAdmin
    ) -> Response:
        retour = field(form, "retour", 300)
        back = retour if re.fullmatch(r"/administration/[a-z0-9/-]*", retour) else STAFF
        return await confirmed_account_action(request, form, api, user_id, action, back)

    account_action.__doc__ = f"{ACCOUNT_ACTIONS[action][0]} (partner or CAF staff), confirmed first."
    router.add_api_route(
        f"{STAFF}/{{user_id}}/{action}",
        account_action,
        methods=["POST"],
        name=f"account_{action.replace('-', '_')}",
    )


for _action in ACCOUNT_ACTIONS:
    _account_route(_action)


async def confirmed_account_action(
    request: Request, form: FormData, api: UserApi, user_id: str, action: str, back: str
) -> Response:
    """The confirmation page naming the person and stating the action's effect; once confirmed, the call
    to identity, then back to `back` saying what was done, or identity's refusal as an alert."""
    title, effect, _ = ACCOUNT_ACTIONS[action]
    names = await account_names(api, [user_id])
    who = f"Compte de {names[user_id]}. " if user_id in names else ""

    async def act() -> Response:
        reason = field(form, "reason", 500)
        body = {"reason": reason} if reason and action == "suspend" else None
        response = await api.call("identity", "POST", f"/v1/users/{user_id}/{action}", json=body)
        if response.is_success:
            return redirect(f"{back}?info={action}")
        error = ApiError("identity", response.status_code, json_of(response))
        if error.status >= 500:
            raise error
        refusal = ACCOUNT_REFUSALS.get(error.reason or "") or _problem_text(error)
        return error_page(request, error.status, refusal)

    return await confirmed(request, form, title, who + effect, act, back=back)


# Identity's refusals of an account action, in words.
ACCOUNT_REFUSALS = {
    "already_activated": "Ce compte est déjà activé : il n'y a plus de lien d'activation à envoyer.",
}
