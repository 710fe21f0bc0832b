"""Routes of habilitations (grants): list them, revoke one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cdap_identity import habilitations, queries
from cdap_identity.schemas import GrantPublic, Reason
from cdap_identity.web import Id, write
from cdap_shared.auth import CurrentActor
from cdap_shared.db import SessionDep

router = APIRouter(tags=["grants"])


@router.get("/v1/grants", response_model=list[GrantPublic])
async def list_grants(
    session: SessionDep,
    actor: CurrentActor,
    user: Annotated[str | None, Query(max_length=64)] = None,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[AB])$")] = None,
) -> list[GrantPublic]:
    """Grants the caller may see: all (CAF admin, auditor), its department (instructors, managers),
    or its organisation (partner administrators)."""
    return await queries.grants(session, actor, user, department)


@router.post("/v1/grants/{grant_id}/revoke", response_model=GrantPublic, responses={403: {}, 404: {}})
async def revoke(
    grant_id: Id, session: SessionDep, actor: CurrentActor, body: Reason | None = None
) -> GrantPublic:
    """Revoke a grant now (CAF admin, or a manager of its department); lookups are denied within seconds."""
    reason = body.reason if body else None
    grant = await write(session, habilitations.revoke(session, actor, grant_id, reason))
    return GrantPublic(**grant.model_dump())
