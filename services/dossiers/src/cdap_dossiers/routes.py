"""HTTP entrypoints of the dossiers service: thin, they call `lookups` and shape the answer."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from cdap_dossiers import lookups
from cdap_dossiers.lookups import Caller, Outcome, SearchCriteria
from cdap_dossiers.policy import Policy
from cdap_dossiers.ratelimit import limit_for
from cdap_shared import standing
from cdap_shared.auth import CurrentPrincipal, Principal, verified_principal
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(prefix="/v1/dossiers", tags=["dossiers"])

NUMERO, MOTIF = re.compile(r"\d{7}"), re.compile(r"[a-z_]{1,50}")
NAME_LENGTH = 100  # the longest family name a lookup or search takes
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


class DossierView(BaseModel):
    numero: str
    department: str
    policy_version: str
    sections: dict[str, Any]


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"motif": "accompagnement_social", "family_name": "Martin", "birth_date": "1984-03-12"}
            ]
        },
    )

    motif: str = Field(pattern=r"^[a-z_]{1,50}$")
    nir: str | None = Field(
        default=None, pattern=r"^[12]\s?\d{2}\s?\d{2}\s?(\d{2}|2[AB])\s?\d{3}\s?\d{3}\s?\d{2}$"
    )
    family_name: str | None = Field(default=None, min_length=1, max_length=NAME_LENGTH)
    birth_date: date | None = None
    telephone: str | None = Field(default=None, pattern=r"^\+?[0-9 .\-]{9,20}$")
    postal_code: str | None = Field(default=None, pattern=r"^\d{5}$")

    @model_validator(mode="after")
    def _one_identifying_criterion(self) -> SearchRequest:
        if not (self.nir or self.family_name or self.telephone):
            raise ValueError("give nir, family_name (+ birth_date) or telephone")
        if self.birth_date and not self.family_name:
            raise ValueError("birth_date goes with family_name")
        return self


class SearchResult(BaseModel):
    items: list[dict[str, str | None]]
    truncated: bool


def _caller(request: Request, principal: Principal) -> Caller:
    settings = request.app.state.settings
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
    caller = _caller(request, principal)
    pool, policy = request.app.state.runtime.pool, request.app.state.policy
    return {"X-Audit-Id": await lookups.record_refusal(pool, policy, caller, reason)}


def _well_formed(request: Request) -> tuple[str, str, str | None] | None:
    """The lookup's numero, motif and family name when they are all valid, else None."""
    numero = request.path_params.get("numero", "")
    motif = request.query_params.get("motif", "")
    family_name = request.query_params.get("family_name")
    name_ok = family_name is None or 0 < len(family_name) <= NAME_LENGTH
    if NUMERO.fullmatch(numero) and MOTIF.fullmatch(motif) and name_ok:
        return numero, motif, family_name
    return None


class LookupRoute(APIRoute):
    """The lookup's route, the service's hot path: a well-formed lookup skips FastAPI's dependency
    solving and parameter validation and goes straight to `get_dossier`, its caller's token verified and
    its standing left to the lookup's own statement to judge. A malformed one takes FastAPI's own path,
    so its 401/403/422 and the OpenAPI document stay FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validated = super().get_route_handler()

        async def handler(request: Request) -> Response:
            params = _well_formed(request)
            if params is None:
                return await validated(request)
            numero, motif, family_name = params
            return await get_dossier(numero, motif, request, await verified_principal(request), family_name)

        return handler


def _unavailable() -> Problem:
    return Problem(
        503, "Service unavailable", "The consultation could not be recorded; no data was returned."
    )


# Declared before `/{numero}`, which would otherwise take `policy` for a (malformed) numero.
@router.get("/policy", response_model=Policy, responses={403: {}})
async def get_policy(request: Request, principal: CurrentPrincipal) -> Policy:
    """The consultation policy in force: each profile's sections, motifs and scope, and its version.

    Any signed-in caller may read it (the portal builds its lookup form from it); reading it names no
    dossier, so it is not a consultation and is not recorded."""
    policy: Policy = request.app.state.policy
    return policy


async def get_dossier(
    numero: Numero,
    motif: Motif,
    request: Request,
    principal: CurrentPrincipal,
    family_name: Annotated[str | None, Query(min_length=1, max_length=NAME_LENGTH)] = None,
) -> Response:
    """The profile-filtered view of one dossier; every call is recorded before it is answered.

    The caller's standing is judged in the lookup's own statement (`lookups.lookup`): `LookupRoute` calls
    this with the token's principal as verified, not yet judged."""
    pool = request.app.state.runtime.pool
    caller = _caller(request, principal)
    try:
        outcome = await lookups.lookup(pool, request.app.state.policy, caller, numero, motif, family_name)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise _unavailable() from exc
    return _answer(outcome)


router.add_api_route(
    "/{numero}",
    get_dossier,
    methods=["GET"],
    response_model=DossierView,
    responses={403: {"description": "Denied (see `reason`)"}, 404: {}, 429: {}, 503: {}},
    route_class_override=LookupRoute,
)


@router.post("/search", response_model=SearchResult, responses={403: {}, 429: {}, 503: {}})
async def search_dossiers(
    body: SearchRequest, request: Request, principal: CurrentPrincipal, session: SessionDep
) -> Response:
    """Minimal matches inside the caller's scope; at most 20; recorded as `dossier.searched`."""
    criteria = SearchCriteria(**body.model_dump())
    try:
        outcome = await lookups.search(
            session, request.app.state.policy, _caller(request, principal), criteria
        )
    except (SQLAlchemyError, OSError) as exc:
        raise _unavailable() from exc
    return _answer(outcome)


def _answer(outcome: Outcome) -> Response:
    """The recorded outcome as HTTP: its audit id and rate-limit fields on every answer, refusals too."""
    headers = outcome.rate.headers() | {"X-Audit-Id": outcome.audit_id}
    if outcome.status != 200:
        reason = outcome.reason or "denied"
        raise Problem(outcome.status, DENIAL_TITLES.get(reason, "Denied"), headers=headers, reason=reason)
    # orjson: the dossier's sections are most of the answer, and the stdlib's encoder its slowest step.
    return Response(orjson.dumps(outcome.body), media_type="application/json", headers=headers)
