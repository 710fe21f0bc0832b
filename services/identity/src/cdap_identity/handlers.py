"""Kafka handlers of other services' events: provision approved requests, revoke grants whose removal
was asked, suspend an account (or disable a partner system) a critical alert names.

`HANDLERS` is the table: event type -> a plain function taking the session, the settings, the event's
typed data and its time (`cdap_shared.consumer.EventHandler`); `handler(settings)` dispatches to it.
Each runs inside the consumer's transaction (with the inbox claim), which commits; an event that
cannot be applied (an unknown organisation or grant) raises, and is dead-lettered.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cdap_identity import accounts, habilitations
from cdap_identity.config import Settings
from cdap_shared import events as ev
from cdap_shared.clock import civil_today
from cdap_shared.consumer import EventHandler, Handler, dispatch


async def request_approved(
    session: AsyncSession, settings: Settings, data: ev.RequestApproved, at: datetime
) -> None:
    """The applicant's account (if new, with its activation mail) and its grant."""
    _, account = await habilitations.provision(session, data, settings.activation_hours, civil_today())
    if account is not None:
        await accounts.mail_activation(session, settings, account)


async def revocation_requested(
    session: AsyncSession, settings: Settings, data: ev.RevocationRequested, at: datetime
) -> None:
    """A partner administrator asked that a grant be removed: it is revoked at once."""
    await habilitations.end_grant(
        session, data.grant_id, "revoked", by=data.by, reason=data.comment, request_id=data.request_id
    )


async def alert_raised(session: AsyncSession, settings: Settings, data: ev.AlertRaised, at: datetime) -> None:
    await habilitations.act_on_alert(session, data)


HANDLERS: dict[str, EventHandler[Settings]] = {
    "access.request.approved": request_approved,
    "access.grant.revocation_requested": revocation_requested,
    "audit.alert.raised": alert_raised,
}


def handler(settings: Settings) -> Handler:
    """The consumer's handler: `HANDLERS` applied to the events it names."""
    return dispatch(HANDLERS, settings)
