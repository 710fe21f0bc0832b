"""Grants (habilitations) and partner-system clients: issue, revoke, expire; create, rotate, disable,
delete. Each change and its event are staged in the caller's transaction; the caller commits."""

from __future__ import annotations

import secrets
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.accounts import SOURCE, NewAccount, create_account, find_user, suspend, utcnow
from cdap_identity.domain import Conflict, Unknown
from cdap_identity.models import Client, Grant, Organisation, User
from cdap_identity.passwords import token_digest
from cdap_shared import events as ev
from cdap_shared.actor import Actor
from cdap_shared.db import locked
from cdap_shared.outbox import emit


class UnknownOrganisation(Unknown):
    """A provisioning event names an organisation this service does not know (goes to the DLQ)."""


async def provision(
    session: AsyncSession, approved: ev.RequestApproved, activation_hours: int, today: date
) -> tuple[Grant, NewAccount | None]:
    """Apply an approved access request: the account (if new) and its grant. Idempotent by request id."""
    existing = (
        (await session.execute(select(Grant).where(col(Grant.request_id) == approved.request_id)))
        .scalars()
        .first()
    )
    if existing is not None:
        return existing, None
    org = await session.get(Organisation, approved.organisation_id)
    if org is None:
        raise UnknownOrganisation(
            "unknown_organisation", f"organisation {approved.organisation_id} is unknown to identity"
        )
    applicant = approved.applicant
    user = await find_user(session, applicant.email, org.id)
    new_account = None
    if user is None:
        new_account = await create_account(
            session,
            email=applicant.email,
            family_name=applicant.family_name,
            given_name=applicant.given_name,
            roles=[domain.PARTNER_USER],
            organisation_id=org.id,
            department=org.department,
            activation_hours=activation_hours,
            job_title=applicant.job_title,
            request_id=approved.request_id,
        )
        user = new_account.user
    valid_from, valid_until = domain.grant_period(today, approved.valid_until, today)
    grant = Grant(
        user_id=user.id,
        organisation_id=org.id,
        profile=approved.profile,
        department=approved.department,
        valid_from=valid_from,
        valid_until=valid_until,
        request_id=approved.request_id,
    )
    session.add(grant)
    await session.flush()
    await emit(
        session,
        "identity.grant.issued",
        source=SOURCE,
        subject=user.id,
        data=ev.GrantIssued.of(grant, grant_id=grant.id, organisation_siret=org.siret),
    )
    return grant, new_account


async def end_grant(
    session: AsyncSession,
    grant_id: str,
    status: str,
    by: str | None,
    reason: str | None = None,
    request_id: str | None = None,
) -> Grant:
    """Revoke or expire an active grant (a no-op on one already ended)."""
    grant = await locked(
        session, Grant, grant_id, Unknown("unknown_grant", f"grant {grant_id} is unknown to identity")
    )
    if grant.status == "active":
        grant.status, grant.ended_at, grant.ended_by = status, utcnow(), by
        await emit(
            session,
            f"identity.grant.{status}",
            source=SOURCE,
            subject=grant.user_id,
            data=ev.GrantEnded(
                grant_id=grant.id, user_id=grant.user_id, by=by, reason=reason, request_id=request_id
            ),
        )
    return grant


async def revoke(session: AsyncSession, actor: Actor, grant_id: str, reason: str | None) -> Grant:
    """Revoke a grant now (a CAF admin, or a manager of its department)."""
    grant = await session.get(Grant, grant_id)
    if grant is None:
        raise Unknown("unknown_grant", "No grant has this id.")
    domain.check_revoker(actor, grant.department)
    return await end_grant(session, grant_id, "revoked", by=actor.sub, reason=reason)


async def expire_due(session: AsyncSession, today: date) -> int:
    """The scheduled sweep: every active grant whose last day has passed becomes expired."""
    due = (
        (
            await session.execute(
                select(col(Grant.id))
                .where(col(Grant.status) == "active", col(Grant.valid_until) < today)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
    for grant_id in due:
        await end_grant(session, grant_id, "expired", by=None, reason="end_of_validity")
    return len(due)


async def _client_changed(
    session: AsyncSession, change: str, client: Client, by: str, reason: str | None = None
) -> None:
    await emit(
        session,
        f"identity.client.{change}",
        source=SOURCE,
        subject=client.id,
        data=ev.ClientChanged(
            client_id=client.id,
            organisation_id=client.organisation_id,
            grant_id=client.grant_id,
            by=by,
            reason=reason,
        ),
    )


async def create_client(session: AsyncSession, grant: Grant, name: str, by: str) -> tuple[Client, str]:
    """A client id and secret bound to `grant`, whose holder must be in good standing. Secrets are
    256-bit random, so SHA-256 is enough to store them (nothing to brute-force), which keeps
    `client_credentials` fast."""
    if grant.status != "active":
        raise Conflict("grant_not_active", "The grant is not active.")
    holder = await session.get(User, grant.user_id)
    if holder is None or holder.status == "suspended":
        raise Conflict("holder_suspended", "The grant's holder is suspended.")
    secret = secrets.token_urlsafe(32)
    client = Client(
        id=f"cdap-{secrets.token_hex(8)}",
        secret_digest=token_digest(secret),
        name=name,
        organisation_id=grant.organisation_id,
        grant_id=grant.id,
        created_by=by,
    )
    session.add(client)
    await _client_changed(session, "created", client, by)
    return client, secret


async def rotate_client(session: AsyncSession, client: Client, by: str, overlap: timedelta) -> str:
    """A new secret (returned, shown once); the previous one keeps working for `overlap`."""
    if client.disabled:
        raise Conflict("disabled", "A disabled client is not given a new secret.")
    secret = secrets.token_urlsafe(32)
    client.previous_secret_digest = client.secret_digest if overlap else None
    client.previous_secret_until = utcnow() + overlap if overlap else None
    client.secret_digest = token_digest(secret)
    await _client_changed(session, "rotated", client, by)
    return secret


async def disable_client(session: AsyncSession, client: Client, by: str, reason: str | None = None) -> None:
    """Refuse the client's tokens (new and current) from now on; a no-op on one already disabled."""
    if not client.disabled:
        client.disabled = True
        await _client_changed(session, "disabled", client, by, reason)


async def delete_client(session: AsyncSession, client: Client, by: str) -> None:
    """Forget the client: its secret and tokens stop working; its history stays in the audit log."""
    await session.delete(client)
    await _client_changed(session, "deleted", client, by)


async def act_on_alert(session: AsyncSession, alert: ev.AlertRaised) -> None:
    """A critical alert suspends the account, or disables the partner system, it names; the CAF then
    reviews it."""
    if alert.severity != "critical" or not alert.actor:
        return
    reason = f"alert:{alert.rule}"
    if await session.get(User, alert.actor) is not None:
        await suspend(session, alert.actor, by="audit", reason=reason)
    elif (client := await session.get(Client, alert.actor, with_for_update=True)) is not None:
        await disable_client(session, client, by="audit", reason=reason)


# ------------------------------------------------------------------------------------------ administration


async def _check_administrator(
    session: AsyncSession, actor: Actor, organisation_id: str, *, hands_out: bool
) -> None:
    delegated = True
    if hands_out:
        org = await session.get(Organisation, organisation_id)
        delegated = org is not None and not org.delegation_withdrawn
    domain.check_client_administrator(actor, organisation_id, hands_out=hands_out, delegated=delegated)


async def _administered(session: AsyncSession, actor: Actor, client_id: str, *, hands_out: bool) -> Client:
    """The client, locked, if `actor` administers it (`hands_out`: and may hand out access)."""
    client = await locked(session, Client, client_id, Unknown("unknown_client", "No client has this id."))
    await _check_administrator(session, actor, client.organisation_id, hands_out=hands_out)
    return client


async def open_client(session: AsyncSession, actor: Actor, grant_id: str, name: str) -> tuple[Client, str]:
    """A partner system's credentials bound to one active grant of the caller's organisation; the secret
    is returned once."""
    grant = await session.get(Grant, grant_id)
    if grant is None:
        raise Unknown("unknown_grant", "No grant has this id.")
    await _check_administrator(session, actor, grant.organisation_id, hands_out=True)
    return await create_client(session, grant, name, actor.sub)


async def rotate(
    session: AsyncSession, actor: Actor, client_id: str, overlap: timedelta
) -> tuple[Client, str]:
    """A new secret for the client, returned once; the previous one works on for `overlap`."""
    client = await _administered(session, actor, client_id, hands_out=True)
    return client, await rotate_client(session, client, actor.sub, overlap)


async def disable(session: AsyncSession, actor: Actor, client_id: str, reason: str | None) -> Client:
    """Stop the partner system now: new tokens are refused, and current ones within seconds."""
    client = await _administered(session, actor, client_id, hands_out=False)
    await disable_client(session, client, actor.sub, reason)
    return client


async def delete(session: AsyncSession, actor: Actor, client_id: str) -> None:
    """Forget the partner system; its tokens are refused within seconds."""
    client = await _administered(session, actor, client_id, hands_out=False)
    await delete_client(session, client, actor.sub)
