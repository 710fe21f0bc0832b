"""HTTP routes of the dossiers service: parse, call `lookups` or `searches`, map the outcome to HTTP.

A recorded refusal is an outcome, not an error: it is answered with its audit id and rate-limit fields
(`_answer`). Its dependencies and the error table are in `web.py`, its bodies in `schemas.py`.
"""

from __future__ import annotations

import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from cdap_dossiers import lookups, searches
from cdap_dossiers.config import Settings
from cdap_dossiers.lookups import Caller, Outcome
from cdap_dossiers.policy import Policy
from cdap_dossiers.ratelimit import limit_for
from cdap_dossiers.schemas import NAME_LENGTH, DossierView, SearchRequest, SearchResult
from cdap_dossiers.searches import SearchCriteria
from cdap_dossiers.web import Ctx, context
from cdap_shared import standing
from cdap_shared.auth import CurrentPrincipal, Principal, verified_principal
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1/dossiers", tags=["dossiers"])
LOOKUP_PATH = f"{router.prefix}/{{numero}}"

NUMERO, MOTIF = re.compile(r"\d{7}"), re.compile(r"[a-z_]{1,50}")
Numero = Annotated[str, Path(pattern=f"^{NUMERO.pattern}$", description="numéro allocataire (7 digits)")]
Motif = Annotated[str, Query(pattern=f"^{MOTIF.pattern}$", description="purpose of the consultation")]

DENIAL_TITLES = {
    "unknown_numero": "Unknown dossier",
    "no_grant_for_department": "No habilitation for this department",
    "outside_caseload": "Dossier outside your caseload",
    "opposition": "The beneficiary objected to sharing",
    "motif_not_allowed": "Purpose not allowed for your profile",
    "identity_mismatch": "Family name does not match",
    "rate_limited": "Too many requests",
} | standing.TITLES  # the lookup judges the caller's standing itself
STATUS = {"granted": 200, "denied": 403, "not_found": 404, "rate_limited": 429}  # by recorded decision


def _caller(request: Request, settings: Settings, principal: Principal) -> Caller:
    return Caller(
        principal,
        request.client.host if request.client else None,
        lookup_limit=limit_for(principal, settings.rate_limit_user, settings.rate_limit_client),
        search_limit=limit_for(principal, settings.search_rate_limit_user, settings.search_rate_limit_client),
    )


async def record_refusal(request: Request, principal: Principal, reason: str) -> dict[str, str]:
    """`state.record_refusal` of this app: a search refused for the caller's standing is recorded like
    any other. A well-formed lookup judges the standing itself (`lookups.lookup`); a malformed one names
    no dossier and is not recorded."""
    if request.url.path != "/v1/dossiers/search":
        return {}
    ctx = await context(request)
    caller = _caller(request, ctx.settings, principal)
    return {"X-Audit-Id": await searches.record_refusal(ctx.runtime.pool, ctx.policy, caller, reason)}


def well_formed(request: Request) -> tuple[str, str, str | None] | None:
    """The lookup's numero, motif and family name when they are all valid, else None (`app.py` serves
    the lookups it accepts on a hot route: see `hot_lookup`)."""
    numero = request.path_params.get("numero", "")
    motif = request.query_params.get("motif", "")
    family_name = request.query_params.get("family_name")
    name_ok = family_name is None or 0 < len(family_name) <= NAME_LENGTH
    if NUMERO.fullmatch(numero) and MOTIF.fullmatch(motif) and name_ok:
        return numero, motif, family_name
    return None


async def hot_lookup(request: Request, params: tuple[str, str, str | None]) -> Response:
    """A well-formed lookup, the service's hot path (`cdap_shared.http.ServiceApp.add_hot_route`): no
    dependency solving or parameter validation, the token verified and the caller's standing left to the
    lookup's own statement to judge. A malformed lookup takes `get_dossier`'s FastAPI route, so its
    401/403/422 and the OpenAPI document stay FastAPI's."""
    numero, motif, family_name = params
    principal = await verified_principal(request)
    return await get_dossier(numero, motif, request, await context(request), principal, family_name)


# Declared before `/{numero}`, which would otherwise take `policy` for a (malformed) numero.
@router.get("/policy", response_model=Policy, responses={403: {}})
async def get_policy(ctx: Ctx, principal: CurrentPrincipal) -> Policy:
    """The consultation policy in force: each profile's sections, motifs and scope, and its version.

    Any signed-in caller may read it (the portal builds its lookup form from it); reading it names no
    dossier, so it is not a consultation and is not recorded."""
    return ctx.policy


async def get_dossier(
    numero: Numero,
    motif: Motif,
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
    family_name: Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH)] = None,
) -> Response:
    """The profile-filtered view of one dossier; every call is recorded before it is answered."""
    # `hot_lookup` calls this with the token's principal verified, its standing not yet judged: the
    # lookup's own statement judges it (`lookups.lookup`).
    caller = _caller(request, ctx.settings, principal)
    return _answer(await lookups.lookup(ctx.lookups, ctx.policy, caller, numero, motif, family_name))


router.add_api_route(
    "/{numero}",
    get_dossier,
    methods=["GET"],
    response_model=DossierView,
    responses={403: {"description": "Denied (see `reason`)"}, 404: {}, 429: {}, 503: {}},
)


@router.post("/search", response_model=SearchResult, responses={403: {}, 429: {}, 503: {}})
async def search_dossiers(
    body: SearchRequest, request: Request, ctx: Ctx, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    """Minimal matches inside the caller's scope; at most 20; recorded as `dossier.searched`."""
    caller = _caller(request, ctx.settings, principal)
    return _answer(await searches.search(session, ctx.policy, caller, SearchCriteria(**body.model_dump())))


def _answer(outcome: Outcome) -> Response:
    """The recorded outcome as HTTP: its audit id and rate-limit fields on every answer, refusals too."""
    headers = outcome.rate.headers() | {"X-Audit-Id": outcome.audit_id}
    if outcome.decision != "granted":
        reason = outcome.reason or "denied"
        title = DENIAL_TITLES.get(reason, "Denied")
        raise Problem(STATUS[outcome.decision], title, headers=headers, reason=reason)
    # orjson: the dossier's sections are most of the answer, and the stdlib's encoder its slowest step.
    return Response(orjson.dumps(outcome.body), media_type="application/json", headers=headers)
