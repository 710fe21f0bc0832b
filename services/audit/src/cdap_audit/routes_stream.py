"""The live stream of entries (auditor role only), as Server-Sent Events.

Its router is included ahead of `routes_entries`', so `/v1/entries/stream` is never read as an index.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from cdap_audit import stream
from cdap_audit.web import ERRORS, MAX_POSITION, Ctx, Filters
from cdap_shared.auth import require_roles

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])


@router.get(
    "/entries/stream",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "SSE, one event per entry"},
    },
)
async def stream_entries(
    ctx: Ctx,
    where: Filters,
    from_index: Annotated[int | None, Query(ge=0, le=MAX_POSITION, description="first index sent")] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^\d{1,18}$")] = None,
) -> StreamingResponse:
    """New entries matching the filters as Server-Sent Events (`id` = index, `data` = the entry as listed).

    Starts after `Last-Event-ID` (a reconnecting client), else at `from_index`, else at the end of the
    log; comment lines every 15 s when idle; ends after 10 minutes, to be resumed with `Last-Event-ID`.
    """
    after: int | None = None  # from now on
    if last_event_id is not None:
        after = int(last_event_id)
    elif from_index is not None:
        after = from_index - 1  # -1 for the whole log: the keyset is "index > after"
    events = stream.entry_events(
        ctx.sessions,
        ctx.watcher,
        where,
        after,
        heartbeat=ctx.settings.stream_heartbeat_seconds,
        lifetime=ctx.settings.stream_lifetime_seconds,
    )
    # no-transform and X-Accel-Buffering: proxies must pass each event on as it comes, not buffer it.
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)
