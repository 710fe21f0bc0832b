"""Habilitations (list, revoke) and partner-system clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain, habilitations
from cdap_identity.models import Client, Grant, Organisation
from cdap_identity.schemas import (
    ClientCreate,
    ClientCreated,
    ClientPublic,
    ClientRotated,
    GrantPublic,
    Reason,
)
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


async def _administer(
    session: AsyncSession, principal: Principal, organisation_id: str, *, hands_out: bool
) -> None:
    """Partner-system clients are administered by the organisation's partner administrators and by CAF
    admins. Handing out access (a new client, a new secret) also needs the organisation's delegated
    administration: a credential is access."""
    own = principal.has_role(domain.PARTNER_ADMIN) and principal.org == organisation_id
    if not (own or principal.has_role(domain.CAF_ADMIN)):
        raise _forbidden("Only the organisation's administrators may manage its partner systems.")
    if hands_out and not principal.has_role(domain.CAF_ADMIN):
        org = await session.get(Organisation, organisation_id)
        if org is None or org.delegation_withdrawn:
            raise Problem(
                403,
                "Forbidden",
                "The CAF withdrew this organisation's delegated administration.",
                reason="delegation_withdrawn",
            )


async def _client(session: AsyncSession, principal: Principal, client_id: str, *, hands_out: bool) -> Client:
    client = await session.get(Client, client_id, with_for_update=True)
    if client is None:
        raise Problem(404, "Unknown client")
    await _administer(session, principal, client.organisation_id, hands_out=hands_out)
    return client


def _public_client(client: Client) -> ClientPublic:
    return ClientPublic(client_id=client.id, **client.model_dump(exclude={"id"}))


@router.post(
    "/v1/clients", status_code=201, response_model=ClientCreated, responses={403: {}, 404: {}, 409: {}}
)
async def create_client(
    body: ClientCreate, session: SessionDep, principal: CurrentPrincipal
) -> ClientCreated:
    """A partner system's credentials bound to one active grant of the caller's organisation, whose
    holder is not suspended. The secret is shown once."""
    grant = await session.get(Grant, body.grant_id)
    if grant is None:
        raise Problem(404, "Unknown grant")
    await _administer(session, principal, grant.organisation_id, hands_out=True)
    client, secret = await habilitations.create_client(session, grant, body.name, principal.sub)
    await session.commit()
    return ClientCreated(client_id=client.id, client_secret=secret, grant_id=grant.id)


@router.get("/v1/clients", response_model=list[ClientPublic], responses={403: {}})
async def list_clients(
    session: SessionDep,
    principal: CurrentPrincipal,
    organisation: Annotated[str, Query(min_length=1, max_length=64)],
) -> list[ClientPublic]:
    """An organisation's partner systems (never their secrets)."""
    await _administer(session, principal, organisation, hands_out=False)
    rows = await session.execute(
        select(Client).where(col(Client.organisation_id) == organisation).order_by(col(Client.created_at))
    )
    return [_public_client(c) for c in rows.scalars()]


@router.post(
    "/v1/clients/{client_id}/rotate", response_model=ClientRotated, responses={403: {}, 404: {}, 409: {}}
)
async def rotate_client(
    client_id: Id, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> ClientRotated:
    """A new secret, shown once; the previous one works on for the configured overlap (0 by default)."""
    client = await _client(session, principal, client_id, hands_out=True)
    overlap = timedelta(seconds=request.app.state.settings.client_secret_overlap_seconds)
    secret = await habilitations.rotate_client(session, client, principal.sub, overlap)
    await session.commit()
    return ClientRotated(
        client_id=client.id,
        client_secret=secret,
        grant_id=client.grant_id,
        previous_secret_valid_until=client.previous_secret_until,
    )


@router.post("/v1/clients/{client_id}/disable", response_model=ClientPublic, responses={403: {}, 404: {}})
async def disable_client(
    client_id: Id, session: SessionDep, principal: CurrentPrincipal, body: Reason | None = None
) -> ClientPublic:
    """Stop the partner system now: new tokens are refused, and current ones within seconds."""
    client = await _client(session, principal, client_id, hands_out=False)
    await habilitations.disable_client(session, client, principal.sub, body.reason if body else None)
    await session.commit()
    return _public_client(client)


@router.delete("/v1/clients/{client_id}", status_code=204, responses={403: {}, 404: {}})
async def delete_client(client_id: Id, session: SessionDep, principal: CurrentPrincipal) -> Response:
    """Forget the partner system; its tokens are refused within seconds."""
    client = await _client(session, principal, client_id, hands_out=False)
    await habilitations.delete_client(session, client, principal.sub)
    await session.commit()
    return Response(status_code=204)
