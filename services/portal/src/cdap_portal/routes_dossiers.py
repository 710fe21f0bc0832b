"""Partner users: look up a dossier (numero + motif, + family name where the profile requires it), or
search for one, and read the filtered view section by section with its audit reference.

Lookups and searches are POST forms with a CSRF token even though they read: each one is recorded in
the audit log in the person's name, so another site must not be able to trigger one (a GET link would
be followed with the SameSite=Lax cookie).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from cdap_portal import domain, texts
from cdap_portal.auth import UserApi, Viewer, require
from cdap_portal.clients import checked
from cdap_portal.outcomes import Outcome
from cdap_portal.web import CsrfForm, field, portal_of, redirect, render, session_of
from cdap_shared.telemetry import current_trace_id

router = APIRouter(tags=["dossiers"])
PartnerUser = require("partner_user")


async def _page(
    request: Request, api: UserApi, viewer: Viewer, status: int = 200, **context: Any
) -> Response:
    policy = await portal_of(request).policy.view(api)
    choices = domain.motif_choices(policy, viewer)
    context.setdefault("values", {})
    context.setdefault("errors", {})
    context.setdefault("search_values", {})
    context.setdefault("search_errors", {})
    return render(
        request,
        "lookup.html",
        status=status,
        choices=choices,
        free_motif=not policy.known(),
        needs_family_name=any(c["needs_family_name"] for c in choices),
        searchable=any(c["searchable"] for c in choices),
        **context,
    )


@router.get("/dossiers")
async def lookup_page(request: Request, api: UserApi, viewer: Viewer = PartnerUser) -> Response:
    return await _page(request, api, viewer)


@router.post("/dossiers/consultation")
async def consult(request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = PartnerUser) -> Response:
    values = {k: field(form, k, 100) for k in ("numero", "motif", "family_name")}
    policy = await portal_of(request).policy.view(api)
    choices = domain.motif_choices(policy, viewer)
    errors = domain.check_lookup(values, choices, not policy.known())
    if errors:
        return await _page(request, api, viewer, status=400, values=values, errors=errors)
    params = {"motif": values["motif"]}
    if values["family_name"]:
        params["family_name"] = values["family_name"]
    response = await api.call("dossiers", "GET", f"/v1/dossiers/{values['numero']}", params=params)
    audit_id = response.headers.get("X-Audit-Id")
    if response.status_code == 200:
        view = checked("dossiers", response)
        return show(
            request,
            Outcome(
                "dossier",
                200,
                {
                    "view": view,
                    "sections": domain.ordered_sections(view.get("sections") or {}),
                    "motif": values["motif"],
                    "audit_id": audit_id,
                    "trace_id": current_trace_id(),
                },
            ),
        )
    if response.status_code in (403, 404, 429):
        reason = _reason(response)
        if response.status_code == 404:
            reason = reason or "unknown_numero"
        denied = {
            "values": values,
            "denial": texts.denial(reason),
            "denial_reason": reason,
            "audit_id": audit_id,
        }
        return show(request, Outcome("lookup", response.status_code, denied))
    if response.status_code == 422:
        return await _page(
            request,
            api,
            viewer,
            status=400,
            values=values,
            errors={"numero": "Vérifiez le numéro allocataire et le motif."},
        )
    return await _page(
        request,
        api,
        viewer,
        status=503,
        values=values,
        denial="Le service des dossiers est momentanément indisponible ; aucune donnée n'a été communiquée.",
    )


RESULT = "/dossiers/resultat"
GONE = (
    "Ce résultat n'est plus affiché (il n'est gardé que quelques minutes). Pour revoir le dossier, "
    "refaites la consultation : elle sera enregistrée."
)


def show(request: Request, outcome: Outcome) -> Response:
    """POST-redirect-GET: keep what the lookup or search showed, send the browser to the page that shows
    it. Back and refresh then read it again instead of recording another consultation."""
    key = portal_of(request).outcomes.keep(session_of(request).sid, outcome)
    return redirect(f"{RESULT}/{key}")


@router.get(RESULT + "/{key}")
async def result(
    request: Request,
    api: UserApi,
    key: str = Path(pattern=r"^[A-Za-z0-9_-]{10,40}$"),
    viewer: Viewer = PartnerUser,
) -> Response:
    """The result of this session's recent lookup or search, as it was shown; never asks again."""
    outcome = portal_of(request).outcomes.shown(session_of(request).sid, key)
    if outcome is None:
        return await _page(request, api, viewer, status=404, gone=GONE)
    if outcome.page == "dossier":
        return render(request, "dossier.html", status=outcome.status, **outcome.context)
    return await _page(request, api, viewer, status=outcome.status, **outcome.context)


def _reason(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


@router.post("/dossiers/recherche")
async def search(request: Request, form: CsrfForm, api: UserApi, viewer: Viewer = PartnerUser) -> Response:
    names = ("motif", "nir", "family_name", "birth_date", "telephone", "postal_code")
    values = {k: field(form, k, 100) for k in names}
    policy = await portal_of(request).policy.view(api)
    choices = domain.motif_choices(policy, viewer)
    errors = domain.check_search(values, choices, not policy.known())
    if errors:
        return await _page(request, api, viewer, status=400, search_values=values, search_errors=errors)
    body = {k: v for k, v in values.items() if v}
    response = await api.call("dossiers", "POST", "/v1/dossiers/search", json=body)
    if response.status_code != 200:
        reason = _reason(response)
        message = (
            texts.denial(reason)
            if response.status_code in (403, 429)
            else "La recherche n'a pas pu aboutir. Réessayez plus tard."
        )
        return await _page(
            request,
            api,
            viewer,
            status=response.status_code if response.status_code < 500 else 503,
            search_values=values,
            search_denial=message,
        )
    found = checked("dossiers", response)
    shown = {
        "search_values": values,
        "results": found.get("items", []),
        "truncated": found.get("truncated", False),
        "search_audit_id": response.headers.get("X-Audit-Id"),
    }
    return show(request, Outcome("lookup", 200, shown))
