"""Enrolling a second factor at login, for an account whose roles or grants came to require one.

The token endpoint checks the password, then, instead of a token, hands out a short-lived ticket. With
it the person starts the enrolment (a fresh secret, its `otpauth://` URI and QR code) and confirms it
with a first code; only then does the secret become the account's, and tokens are issued. A ticket is
the proof that the password was just verified: it is random (256 bits), stored as its SHA-256, and one
account has at most one enrolment under way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity.accounts import SOURCE
from cdap_identity.domain import BadProof
from cdap_identity.models import TotpEnrolment, User
from cdap_identity.passwords import new_token, new_totp_secret, otpauth_uri, qr_svg, token_digest
from cdap_shared import events as ev
from cdap_shared.outbox import emit

TOTP_ENROLMENT_REQUIRED = "totp enrolment required"


@dataclass(frozen=True)
class Started:
    """What the person needs to add the account to an authenticator app."""

    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_in: int


async def open_ticket(session: AsyncSession, user: User, now: datetime, seconds: int) -> str:
    """A new enrolment ticket for `user` (any earlier enrolment of theirs is dropped)."""
    await session.execute(delete(TotpEnrolment).where(col(TotpEnrolment.user_id) == user.id))
    ticket = new_token()
    session.add(
        TotpEnrolment(
            ticket_digest=token_digest(ticket), user_id=user.id, expires_at=now + timedelta(seconds=seconds)
        )
    )
    return ticket


async def live_enrolment(session: AsyncSession, ticket: str, now: datetime) -> TotpEnrolment:
    """The enrolment a ticket names, locked for update (`BadProof` if it is unknown or expired)."""
    record = await session.get(TotpEnrolment, token_digest(ticket), with_for_update=True)
    if record is None or record.expires_at <= now:
        raise BadProof("invalid_ticket", "Sign in again to get a new one.")
    return record


async def start(session: AsyncSession, ticket: str, now: datetime) -> Started:
    """The secret to enrol (made on the first call, the same one on the next calls with this ticket)."""
    record = await live_enrolment(session, ticket, now)
    user = await session.get_one(User, record.user_id)
    if record.secret is None:
        record.secret = new_totp_secret()
    uri = otpauth_uri(record.secret, user.email)
    return Started(record.secret, uri, qr_svg(uri), int((record.expires_at - now).total_seconds()))


async def complete(session: AsyncSession, record: TotpEnrolment, user: User, step: int) -> None:
    """The first code was right: the secret becomes the account's second factor (that code is spent)."""
    user.totp_secret, user.totp_last_step = record.secret, step
    await session.delete(record)
    enrolled = ev.UserRef(user_id=user.id)
    await emit(session, "identity.user.totp_enrolled", source=SOURCE, subject=user.id, data=enrolled)


async def forget_expired(session: AsyncSession, now: datetime) -> int:
    """Drop the enrolments nobody finished in time (the sweep)."""
    result = await session.execute(delete(TotpEnrolment).where(col(TotpEnrolment.expires_at) <= now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
