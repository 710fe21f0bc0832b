"""What every route of access-requests needs besides the caller (`cdap_shared.auth.CurrentActor`) and
"now" (`cdap_shared.http.Now`): the service context, a write route's `Command` (committed once per
`Idempotency-Key`), and the one table from domain refusals to HTTP.

Routes parse, call a use case, and map its result to a body; a `domain.Refused` they let through is
answered by `PROBLEMS` (installed by `app.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_access import domain, idempotency
from cdap_access.config import Context
from cdap_access.models import AccessRequest
from cdap_access.schemas import UUID_PATTERN
from cdap_shared.actor import Actor
from cdap_shared.auth import CurrentActor
from cdap_shared.db import SessionDep
from cdap_shared.http import Now
from cdap_shared.refusals import REFUSALS

# Domain refusal -> (status, title): the only place access-requests turns a refusal into HTTP.
PROBLEMS: dict[type[Exception], tuple[int, str]] = {
    **REFUSALS,
    domain.DocumentTooLarge: (413, "Document too large"),
    domain.NotAPdf: (415, "Not a PDF"),
    domain.UnreadablePdf: (422, "Unreadable PDF"),
    domain.ActivePdfContent: (422, "Active PDF content"),
}

RequestId = Annotated[str, Path(pattern=UUID_PATTERN)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]


async def context(request: Request) -> Context:
    """The settings and profile catalogue `app.py` built."""
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(context)]


def summary(row: AccessRequest) -> dict[str, Any]:
    """The answer to a command on a request: where it stands now (`RequestState`)."""
    return {
        "id": row.id,
        "state": row.state,
        "stage": row.stage,
        "due": row.due.isoformat() if row.due else None,
        "version": row.version,
    }


@dataclass(frozen=True)
class Command:
    """What a write route gets besides its own parameters: the request, its session, the caller, the
    service context and "now"."""

    request: Request
    session: AsyncSession
    actor: Actor
    ctx: Context
    now: datetime

    async def commit(
        self,
        action: Callable[[], Awaitable[idempotency.Outcome]],
        *,
        key: str | None = None,
        canonical_body: str = "",
    ) -> JSONResponse:
        """Run the command (`action` calls the use case and maps its result to status and body) and
        commit it, once per `Idempotency-Key` when one is given."""
        print_ = idempotency.fingerprint(self.request.method, self.request.url.path, canonical_body)
        status, body = await idempotency.run_once(
            self.session, actor=self.actor.sub, key=key, print_=print_, action=action
        )
        return JSONResponse(body, status_code=status)


async def command(request: Request, session: SessionDep, actor: CurrentActor, ctx: Ctx, now: Now) -> Command:
    """FastAPI dependency: the `Command` of this request."""
    return Command(request, session, actor, ctx, now)


Write = Annotated[Command, Depends(command)]
