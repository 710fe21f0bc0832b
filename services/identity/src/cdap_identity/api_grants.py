"""Habilitations (list, revoke) and partner-system clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select
from sqlmodel import col

from cdap_identity import domain, habilitations
from cdap_identity.models import Grant, Organisation
from cdap_identity.schemas import ClientCreate, ClientCreated, GrantPublic, Reason
from cdap_shared.auth import CurrentPrincipal, Principal
from cdap_shared.db import SessionDep
from cdap_shared.problems import Problem

router = APIRouter(tags=["grants"])
Id = Annotated[str, Path(min_length=1, max_length=64)]


def _forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail, reason="not_allowed")


def _may_see(principal: Principal, grant: Grant) -> bool:
    if principal.has_role(domain.CAF_ADMIN, domain.AUDITOR):
        return True
    if (
        principal.has_role(domain.CAF_INSTRUCTOR, domain.CAF_MANAGER)
        and principal.department == grant.department
    ):
        return True
    return principal.has_role(domain.PARTNER_ADMIN) and principal.org == grant.organisation_id


@router.get("/v1/grants", response_model=list[GrantPublic])
async def list_grants(
    session: SessionDep,
    principal: CurrentPrincipal,
    user: Annotated[str | None, Query(max_length=64)] = None,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[AB])$")] = None,
) -> list[GrantPublic]:
    """Grants the caller may see: all (CAF admin, auditor), its department (instructors, managers),
    or its organisation (partner administrators)."""
    if not principal.has_role(
        domain.CAF_ADMIN, domain.AUDITOR, domain.CAF_INSTRUCTOR, domain.CAF_MANAGER, domain.PARTNER_ADMIN
    ):
        raise _forbidden("Your role cannot list grants.")
    stmt = select(Grant).order_by(col(Grant.valid_until), col(Grant.id)).limit(500)
    if user:
        stmt = stmt.where(col(Grant.user_id) == user)
    if department:
        stmt = stmt.where(col(Grant.department) == department)
    if not principal.has_role(domain.CAF_ADMIN, domain.AUDITOR):
        if principal.has_role(domain.CAF_INSTRUCTOR, domain.CAF_MANAGER):
            stmt = stmt.where(col(Grant.department) == principal.department)
        else:
            stmt = stmt.where(col(Grant.organisation_id) == principal.org)
    return [GrantPublic(**g.model_dump()) for g in (await session.execute(stmt)).scalars()]


@router.post("/v1/grants/{grant_id}/revoke", response_model=GrantPublic, responses={403: {}, 404: {}})
async def revoke(
    grant_id: Id, session: SessionDep, principal: CurrentPrincipal, body: Reason | None = None
) -> GrantPublic:
    """Revoke a grant now (CAF admin, or a manager of its department); lookups are denied within seconds."""
    grant = await session.get(Grant, grant_id)
    if grant is None:
        raise Problem(404, "Unknown grant")
    manager_here = principal.has_role(domain.CAF_MANAGER) and principal.department == grant.department
    if not (principal.has_role(domain.CAF_ADMIN) or manager_here):
        raise _forbidden("Only a CAF admin or a manager of the grant's department may revoke it.")
    grant = await habilitations.end_grant(
        session, grant_id, "revoked", by=principal.sub, reason=body.reason if body else None
    )
    await session.commit()
    return GrantPublic(**grant.model_dump())


@router.post(
    "/v1/clients", status_code=201, response_model=ClientCreated, responses={403: {}, 404: {}, 409: {}}
)
async def create_client(
    body: ClientCreate, session: SessionDep, principal: CurrentPrincipal
) -> ClientCreated:
    """A partner system's credentials bound to one active grant of the caller's organisation.
    The secret is shown once."""
    grant = await session.get(Grant, body.grant_id)
    if grant is None:
        raise Problem(404, "Unknown grant")
    own = principal.has_role(domain.PARTNER_ADMIN) and principal.org == grant.organisation_id
    if not (own or principal.has_role(domain.CAF_ADMIN)):
        raise _forbidden("Only the grant's organisation administrators may create a client for it.")
    if not principal.has_role(domain.CAF_ADMIN):
        # Delegated administration withdrawn: the partner's admins may no longer hand out access,
        # and a partner-system credential is access.
        org = await session.get(Organisation, grant.organisation_id)
        if org is None or org.delegation_withdrawn:
            raise Problem(
                403,
                "Forbidden",
                "The CAF withdrew this organisation's delegated administration.",
                reason="delegation_withdrawn",
            )
    if grant.status != "active":
        raise Problem(409, "Grant not active", reason="grant_not_active")
    client, secret = await habilitations.create_client(session, grant, body.name, principal.sub)
    await session.commit()
    return ClientCreated(client_id=client.id, client_secret=secret, grant_id=grant.id)
