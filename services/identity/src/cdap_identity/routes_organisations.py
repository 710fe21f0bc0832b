"""Routes of partner organisations: list, read, register (CAF admins), amend, withdraw or restore their
delegated administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cdap_identity import organisations, queries
from cdap_identity.models import Organisation
from cdap_identity.schemas import OrganisationCreate, OrganisationPublic, OrganisationUpdate
from cdap_identity.web import CafAdmin, Config, Id, write
from cdap_shared.auth import CurrentActor
from cdap_shared.clock import civil_today
from cdap_shared.db import SessionDep

router = APIRouter(tags=["accounts"])


@router.get("/v1/organisations", response_model=list[OrganisationPublic], responses={403: {}})
async def list_organisations(
    session: SessionDep,
    actor: CurrentActor,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[AB])$")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> list[OrganisationPublic]:
    """Organisations by name (any part, any case) or SIRET (its first digits), by name; at most 200.

    CAF admins and auditors see every department, instructors and managers their own."""
    return await queries.organisations(session, actor, department, q)


@router.post(
    "/v1/organisations", status_code=201, response_model=OrganisationPublic, responses={409: {}, 422: {}}
)
async def create_organisation(
    body: OrganisationCreate, config: Config, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """Register a partner organisation and its administrators; each gets an activation mail."""
    org = Organisation(
        siret=body.siret,
        name=body.name,
        kind=body.kind,
        department=body.department,
        convention_reference=body.convention.reference,
        convention_valid_until=body.convention.valid_until,
    )
    admins = [(p.email, p.family_name, p.given_name) for p in body.administrators]
    created = await write(session, organisations.register(session, config, org, admins))
    return queries.organisation_view(org, [a.user.id for a in created])


@router.get(
    "/v1/organisations/{organisation_id}", response_model=OrganisationPublic, responses={403: {}, 404: {}}
)
async def get_organisation(
    organisation_id: Id, session: SessionDep, actor: CurrentActor
) -> OrganisationPublic:
    """An organisation, for its own members, CAF admins, auditors, and CAF staff of its department."""
    return await queries.organisation(session, actor, organisation_id)


@router.post(
    "/v1/organisations/{organisation_id}/withdraw-delegation",
    response_model=OrganisationPublic,
    responses={404: {}},
)
async def withdraw_delegation(
    organisation_id: Id, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """The CAF takes back the organisation's delegated administration: its admins can no longer ask for
    access nor create clients."""
    org = await write(session, organisations.set_delegation(session, organisation_id, withdrawn=True))
    return await queries.described(session, org)


@router.post(
    "/v1/organisations/{organisation_id}/restore-delegation",
    response_model=OrganisationPublic,
    responses={404: {}},
)
async def restore_delegation(organisation_id: Id, session: SessionDep, admin: CafAdmin) -> OrganisationPublic:
    """The CAF gives the organisation its delegated administration back."""
    org = await write(session, organisations.set_delegation(session, organisation_id, withdrawn=False))
    return await queries.described(session, org)


@router.patch(
    "/v1/organisations/{organisation_id}",
    response_model=OrganisationPublic,
    responses={404: {}, 422: {}},
)
async def amend_organisation(
    organisation_id: Id, body: OrganisationUpdate, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """Rename, change the kind, or renew / amend the convention (a new reference and end date); every
    service hears it (`identity.organisation.updated`), so requests refused for an expired convention
    are accepted again."""
    convention = (body.convention.reference, body.convention.valid_until) if body.convention else None
    amended = organisations.amend(
        session, organisation_id, civil_today(), name=body.name, kind=body.kind, convention=convention
    )
    return await queries.described(session, await write(session, amended))
