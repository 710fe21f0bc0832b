"""Routes of the profile catalogue: what may be requested."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cdap_access.schemas import PROFILES_EXAMPLE
from cdap_access.web import Ctx
from cdap_shared.auth import CurrentPrincipal
from cdap_shared.http import example_response

router = APIRouter(prefix="/v1", tags=["access requests"])


@router.get("/profiles", responses={200: example_response(PROFILES_EXAMPLE)})
async def profiles(ctx: Ctx, principal: CurrentPrincipal) -> dict[str, Any]:
    """The profiles that may be requested, and which need a second approval."""
    return {"profiles": {name: p.model_dump() for name, p in ctx.catalogue.profiles.items()}}
