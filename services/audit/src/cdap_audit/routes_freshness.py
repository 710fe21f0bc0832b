"""How fresh the log is: until when everything published is in it, from the ingestion's consumer watch.

A search that finds nothing is only conclusive for what the log has read: the auditors' pages say "journal
à jour au …" and warn while records are waiting, so that "no consultation recorded" is never shown as
certain while ingestion lags.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cdap_audit.web import Ctx
from cdap_shared.auth import require_roles

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])


class Freshness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"as_of": "2026-11-30T14:05:00Z", "caught_up": True, "waiting": 0, "stalled": False},
                {"as_of": "2026-11-30T14:05:00Z", "caught_up": False, "waiting": 1250, "stalled": True},
            ]
        }
    )

    as_of: datetime | None = Field(
        description="everything published before this moment is in the log (null: not known since the "
        "service started)"
    )
    caught_up: bool = Field(description="nothing was waiting at the last sample, a few seconds ago")
    waiting: int = Field(ge=0, description="events published but not yet in the log")
    stalled: bool = Field(description="events are waiting and the ingestion has not progressed for a while")


@router.get("/freshness", response_model=Freshness, responses={401: {}, 403: {}})
async def log_freshness(ctx: Ctx) -> Freshness:
    """Until when the log is complete, and how many events wait to enter it (sampled every few seconds)."""
    seen = ctx.consumers.freshness(ctx.settings.consumer_group)
    return Freshness(as_of=seen.as_of, caught_up=seen.caught_up, waiting=seen.waiting, stalled=seen.stalled)
