"""What identity does with other services' events (inside the consumer's transaction)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cdap_identity import habilitations
from cdap_identity.models import Grant
from cdap_identity.notifications import activation_mail
from cdap_shared import events as ev
from cdap_shared.clock import civil_today
from cdap_shared.envelope import CloudEvent
from cdap_shared.mail import queue


class IdentityHandlers:
    """Provision on approved requests, revoke on removal requests, suspend (an account) or disable
    (a partner system) on critical alerts."""

    def __init__(self, portal_url: str, activation_hours: int) -> None:
        self.portal_url = portal_url
        self.activation_hours = activation_hours

    async def apply(self, session: AsyncSession, event: CloudEvent) -> None:
        data = ev.parse_data(event)
        if isinstance(data, ev.RequestApproved):
            _, account = await habilitations.provision(session, data, self.activation_hours, civil_today())
            if account is not None:
                queue(
                    session,
                    activation_mail(
                        account.user, account.activation_token, self.portal_url, self.activation_hours
                    ),
                )
        elif isinstance(data, ev.RevocationRequested):
            if await session.get(Grant, data.grant_id) is None:
                raise LookupError(f"grant {data.grant_id} is unknown to identity")
            await habilitations.end_grant(
                session, data.grant_id, "revoked", by=data.by, reason=data.comment, request_id=data.request_id
            )
        elif isinstance(data, ev.AlertRaised):
            await habilitations.act_on_alert(session, data)
