"""Routes of alerts (auditor role only): the list, one alert, and an auditor's review of it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import queries, reviews
from cdap_audit.domain import ReviewAction
from cdap_audit.schemas import AlertItem, AlertPage, Review
from cdap_audit.web import ERRORS, Actor, Context, Ctx, Cursor, Limit, OrderQuery, cursor_position
from cdap_shared.auth import CurrentPrincipal, require_roles
from cdap_shared.db import SessionDep
from cdap_shared.http import Now

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])

AlertId = Annotated[str, Path(pattern=r"^[0-9A-Za-z-]{1,64}$", description="`alert_id` of the alert")]
REVIEW_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 404: {}, 409: {}}


@router.get("/alerts", response_model=AlertPage, responses=ERRORS)
async def list_alerts(
    session: SessionDep,
    actor: Actor = None,
    rule: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,49}$")] = None,
    severity: Annotated[str | None, Query(pattern=r"^(info|warning|critical)$")] = None,
    state: Annotated[str | None, Query(pattern=r"^(open|acknowledged|closed)$")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
    order: OrderQuery = "asc",
) -> dict[str, Any]:
    """Alerts raised by the rules with their state, oldest first by default."""
    page = await queries.alerts(
        session,
        actor=actor,
        rule=rule,
        severity=severity,
        state=state,
        cursor=cursor_position(cursor),
        limit=limit,
        order=order,
    )
    return page.body()


@router.get("/alerts/{alert_id}", response_model=AlertItem, responses={**ERRORS, 404: {}})
async def get_alert(alert_id: AlertId, session: SessionDep) -> dict[str, Any]:
    """One alert, with its state and the auditors' comments."""
    return await queries.alert(session, alert_id)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertItem, responses=REVIEW_ERRORS)
async def acknowledge_alert(
    ctx: Ctx, session: SessionDep, principal: CurrentPrincipal, now: Now, alert_id: AlertId, body: Review
) -> dict[str, Any]:
    """Acknowledge an open alert, saying in a comment what is being done; 409 otherwise.
    Logged as `audit.alert.acknowledged` (who and which alert, not the comment)."""
    return await _review(ctx, session, principal.sub, now, alert_id, "acknowledge", body.comment)


@router.post("/alerts/{alert_id}/close", response_model=AlertItem, responses=REVIEW_ERRORS)
async def close_alert(
    ctx: Ctx, session: SessionDep, principal: CurrentPrincipal, now: Now, alert_id: AlertId, body: Review
) -> dict[str, Any]:
    """Close an open or acknowledged alert; 409 otherwise. Logged as `audit.alert.closed`."""
    return await _review(ctx, session, principal.sub, now, alert_id, "close", body.comment)


async def _review(
    ctx: Context,
    session: AsyncSession,
    by: str,
    now: datetime,
    alert_id: str,
    action: ReviewAction,
    comment: str | None,
) -> dict[str, Any]:
    """Apply the review in its own transaction, then answer the alert as it now stands."""
    async with session.begin():
        await reviews.review(
            session, alert_id, action, by=by, comment=comment, topic=ctx.settings.alerts_topic, now=now
        )
    return await queries.alert(session, alert_id)
