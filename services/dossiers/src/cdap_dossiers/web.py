"""What every route of dossiers needs: the service context, and the one table from domain errors to HTTP.

A `NotRecorded` that a route lets through is answered by `PROBLEMS` (installed by `app.py`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cdap_dossiers.config import Context
from cdap_dossiers.domain import NotRecorded

# Domain error -> (status, title): the only place dossiers turns an error into HTTP.
PROBLEMS: dict[type[Exception], tuple[int, str]] = {NotRecorded: (503, "Service unavailable")}


async def context(request: Request) -> Context:
    """The settings, policy and runtime `app.py` built."""
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(context)]
