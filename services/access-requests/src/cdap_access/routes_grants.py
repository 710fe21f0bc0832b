"""Routes of issued grants: a partner administrator asks for one's removal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from cdap_access import removals
from cdap_access.requests import actor_of
from cdap_access.schemas import RemovalIn, RemovalOut
from cdap_access.web import context, current_time, write
from cdap_shared.auth import CurrentPrincipal
from cdap_shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["access requests"])


@router.post(
    "/grants/{grant_id}/removal-requests",
    status_code=202,
    response_model=RemovalOut,
    responses={403: {}, 404: {}, 409: {}},
)
async def request_removal(
    grant_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    body: RemovalIn | None = None,
) -> JSONResponse:
    """A partner administrator asks that a grant of their organisation be removed (identity revokes it)."""
    ctx, now, actor = context(request), current_time(request), actor_of(principal)
    return await write(
        request,
        session,
        principal,
        lambda: removals.request_removal(
            session, ctx.settings, actor, grant_id, body.comment if body else None, now
        ),
    )
