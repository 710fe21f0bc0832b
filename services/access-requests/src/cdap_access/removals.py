"""Removal of a grant, asked by the partner's administrator when someone no longer needs access.

Removal only reduces privilege, so it needs no CAF decision: the request is recorded and
`access.grant.revocation_requested` is emitted at once; identity revokes the grant and its
`identity.grant.revoked` then marks the originating access request `revoked`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cdap_access import domain
from cdap_access.config import Settings
from cdap_access.domain import Unknown
from cdap_access.models import IssuedGrant, RemovalRequest
from cdap_access.store import SOURCE
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.actor import Actor
from cdap_shared.db import locked
from cdap_shared.envelope import new_event_id


async def request_removal(
    session: AsyncSession, settings: Settings, actor: Actor, grant_id: str, comment: str | None, now: datetime
) -> RemovalRequest:
    """Record the removal and emit its event; asking twice gives back the first removal request."""
    grant = await locked(session, IssuedGrant, grant_id, Unknown("unknown_grant", "No grant has this id."))
    domain.check_removal(actor, organisation_id=grant.organisation_id, active=grant.status == "active")
    if grant.removal_request_id is not None:
        existing = await session.get(RemovalRequest, grant.removal_request_id)
        if existing is not None:
            return existing
    removal_id = new_event_id()
    event = ev.make_event(
        "access.grant.revocation_requested",
        source=SOURCE,
        subject=grant.grant_id,
        data=ev.RevocationRequested(
            request_id=removal_id,
            grant_id=grant.grant_id,
            user_id=grant.user_id,
            by=actor.sub,
            comment=comment,
        ),
    )
    await outbox.add(session, event, topic=settings.access_topic)
    removal = RemovalRequest(
        id=removal_id,
        grant_id=grant.grant_id,
        organisation_id=grant.organisation_id,
        requested_by=actor.sub,
        comment=comment,
        requested_at=now,
        event_id=event.id,
    )
    session.add(removal)
    grant.removal_request_id = removal_id
    return removal
