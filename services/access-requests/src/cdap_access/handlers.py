"""Kafka handlers of identity's events: the organisation and grant projections, and the requests they close.

`HANDLERS` is the table: event type -> a plain function taking the session, the settings, the event's
typed data and its time (`cdap_shared.consumer.EventHandler`); `handler(settings)` dispatches to it.
Each runs inside the consumer's transaction (with the inbox claim), so a redelivery changes nothing.
An event that does not fit a request's state (a grant for a withdrawn request) is logged and left:
identity is the authority on grants, and dead-lettering it would not make it fit better.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_access import domain, store
from cdap_access.config import Settings
from cdap_access.models import AccessRequest, IssuedGrant, PartnerOrganisation
from cdap_shared import events as ev
from cdap_shared import standing
from cdap_shared.consumer import EventHandler, Handler, dispatch

log = structlog.get_logger(__name__)
IDENTITY = "identity"  # the actor recorded in a request's history for what identity did


async def organisation_registered(
    session: AsyncSession, settings: Settings, data: ev.OrganisationRegistered, at: datetime
) -> None:
    """A new organisation, or a new description of one (convention, administrators, delegation)."""
    row = data.model_dump()
    stmt = insert(PartnerOrganisation).values(row)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["organisation_id"],
            set_={k: stmt.excluded[k] for k in row if k != "organisation_id"},
        )
    )


async def grant_issued(session: AsyncSession, settings: Settings, data: ev.GrantIssued, at: datetime) -> None:
    """Identity issued a grant: remember it, and mark the approved request it answers provisioned."""
    fields = set(IssuedGrant.model_fields) - {"status", "renewal_request_id", "removal_request_id"}
    stmt = insert(IssuedGrant).values(data.model_dump(include=fields) | {"status": "active"})
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["grant_id"]))
    if data.request_id is None:
        return
    row = await store.load(session, data.request_id)
    if row is None:
        log.info("grant issued for a request this service does not know", grant_id=data.grant_id)
        return
    try:
        step = domain.provision(store.facts_of(row))
    except domain.Refused:
        log.warning("grant issued for a request that is not approved", request_id=row.id, state=row.state)
        return
    if step is not None:
        await store.record_step(session, settings, row, step, actor=IDENTITY, now=at)
        await session.execute(
            update(AccessRequest)
            .where(col(AccessRequest.id) == row.id)
            .values(grant_id=data.grant_id, user_id=data.user_id)
        )


async def grant_revoked(session: AsyncSession, settings: Settings, data: ev.GrantEnded, at: datetime) -> None:
    await _grant_ended(session, settings, data, at, revoked=True)


async def grant_expired(session: AsyncSession, settings: Settings, data: ev.GrantEnded, at: datetime) -> None:
    await _grant_ended(session, settings, data, at, revoked=False)


async def _grant_ended(
    session: AsyncSession, settings: Settings, data: ev.GrantEnded, at: datetime, *, revoked: bool
) -> None:
    """The grant is over: so is the request it came from (revoked, or expired)."""
    await session.execute(
        update(IssuedGrant)
        .where(col(IssuedGrant.grant_id) == data.grant_id)
        .values(status="revoked" if revoked else "expired")
    )
    request_id = data.request_id or await session.scalar(
        select(col(AccessRequest.id)).where(col(AccessRequest.grant_id) == data.grant_id)
    )
    row = await store.load(session, request_id) if request_id else None
    if row is None:
        return
    step = domain.end_grant(store.facts_of(row), revoked=revoked)
    if step is not None:
        await store.record_step(
            session, settings, row, step, actor=data.by or IDENTITY, now=at, comment=data.reason
        )


async def user_provisioned(
    session: AsyncSession, settings: Settings, data: ev.UserProvisioned, at: datetime
) -> None:
    """Remember which account identity created for a request (shown to the approvers)."""
    if data.request_id is not None:
        await session.execute(
            update(AccessRequest).where(col(AccessRequest.id) == data.request_id).values(user_id=data.user_id)
        )


HANDLERS: dict[str, EventHandler[Settings]] = {
    "identity.organisation.registered": organisation_registered,
    "identity.organisation.updated": organisation_registered,
    "identity.grant.issued": grant_issued,
    "identity.grant.revoked": grant_revoked,
    "identity.grant.expired": grant_expired,
    "identity.user.provisioned": user_provisioned,
}


def handler(settings: Settings) -> Handler:
    """The consumer's handler: `HANDLERS` applied to the events it names, and every event given to the
    callers' standing (`cdap_shared.standing`)."""
    return dispatch(HANDLERS, settings, then=standing.apply)
