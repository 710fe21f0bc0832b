"""What every route of access-requests needs: path and header types, "now", the service context, and
writes committed once per `Idempotency-Key`.

`app.state.clock` gives "now" (tests replace it to travel in time); writes go through
`idempotency.run_once`, which commits, so a retried call with the same `Idempotency-Key` has one effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Header, Path, Request
from fastapi.responses import JSONResponse

from cdap_access import idempotency
from cdap_access.requests import Context
from cdap_access.schemas import UUID_PATTERN
from cdap_shared.auth import Principal
from cdap_shared.db import SessionDep

RequestId = Annotated[str, Path(pattern=UUID_PATTERN)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def current_time(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


async def write(
    request: Request,
    session: SessionDep,
    principal: Principal,
    action: Callable[[], Awaitable[idempotency.Outcome]],
    *,
    key: str | None = None,
    canonical_body: str = "",
) -> JSONResponse:
    """Run a write and commit it (once per `Idempotency-Key`, when one is given)."""
    print_ = idempotency.fingerprint(request.method, request.url.path, canonical_body)
    status, body = await idempotency.run_once(
        session, actor=principal.sub, key=key, print_=print_, action=action
    )
    return JSONResponse(body, status_code=status)
