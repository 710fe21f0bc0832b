"""Routes of issued grants: a partner administrator asks for one's removal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from cdap_access import idempotency, removals
from cdap_access.models import RemovalRequest
from cdap_access.schemas import RemovalIn, RemovalOut
from cdap_access.web import Write

router = APIRouter(prefix="/v1", tags=["access requests"])


@router.post(
    "/grants/{grant_id}/removal-requests",
    status_code=202,
    response_model=RemovalOut,
    responses={403: {}, 404: {}, 409: {}},
)
async def request_removal(
    grant_id: Annotated[str, Path(min_length=1, max_length=64)],
    cmd: Write,
    body: RemovalIn | None = None,
) -> JSONResponse:
    """A partner administrator asks that a grant of their organisation be removed (identity revokes it)."""
    comment = body.comment if body else None

    async def action() -> idempotency.Outcome:
        return 202, _answer(
            await removals.request_removal(
                cmd.session, cmd.ctx.settings, cmd.actor, grant_id, comment, cmd.now
            )
        )

    return await cmd.commit(action)


def _answer(removal: RemovalRequest) -> dict[str, Any]:
    return {
        "id": removal.id,
        "grant_id": removal.grant_id,
        "requested_by": removal.requested_by,
        "requested_at": removal.requested_at.isoformat(),
        "state": "requested",
    }
