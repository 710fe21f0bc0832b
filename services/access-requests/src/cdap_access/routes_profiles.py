"""Routes of the profile catalogue: what may be requested."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from cdap_access.web import context
from cdap_shared.auth import CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["access requests"])


@router.get("/profiles")
async def profiles(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """The profiles that may be requested, and which need a second approval."""
    return {"profiles": {name: p.model_dump() for name, p in context(request).catalogue.profiles.items()}}
