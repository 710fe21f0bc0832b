"""Accounts: create (CAF staff, and the accounts of organisations and approved requests), activate,
suspend, reinstate, unlock, force a password reset, mail a new activation link. Each use case stages
its change, its event and its mail in the caller's transaction; the caller commits."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.config import Settings
from cdap_identity.domain import Conflict, Unknown
from cdap_identity.models import Grant, OneTimeToken, Organisation, RefreshToken, UnknownLogin, User
from cdap_identity.notifications import activation_mail, reset_mail
from cdap_identity.passwords import (
    check_policy,
    hash_password,
    new_token,
    new_totp_secret,
    otpauth_uri,
    qr_svg,
    token_digest,
)
from cdap_shared import events as ev
from cdap_shared.actor import Actor
from cdap_shared.db import locked
from cdap_shared.mail import queue
from cdap_shared.outbox import emit

SOURCE = "/cdap/identity"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewAccount:
    """An account and a one-time activation token just issued for it, to mail (never stored in clear)."""

    user: User
    activation_token: str


async def find_user(session: AsyncSession, email: str, organisation_id: str | None) -> User | None:
    stmt = select(User).where(func.lower(col(User.email)) == email.lower())
    stmt = (
        stmt.where(col(User.organisation_id) == organisation_id)
        if organisation_id
        else stmt.where(col(User.organisation_id).is_(None))
    )
    return (await session.execute(stmt)).scalars().first()


async def issue_one_time_token(session: AsyncSession, user: User, purpose: str, hours: int) -> str:
    token = new_token()
    session.add(
        OneTimeToken(
            digest=token_digest(token),
            user_id=user.id,
            purpose=purpose,
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    return token


async def create_account(
    session: AsyncSession,
    *,
    email: str,
    family_name: str,
    given_name: str,
    roles: list[str],
    organisation_id: str | None,
    department: str | None,
    activation_hours: int,
    job_title: str | None = None,
    request_id: str | None = None,
) -> NewAccount:
    """A pending account and its activation token; emits `identity.user.provisioned`."""
    if await find_user(session, email, organisation_id) is not None:
        raise Conflict("account_exists", "This person already has an account here.")
    user = User(
        email=email.strip(),
        family_name=family_name,
        given_name=given_name,
        organisation_id=organisation_id,
        roles=sorted(set(roles)),
        department=department,
        job_title=job_title,
    )
    session.add(user)
    await session.flush()
    token = await issue_one_time_token(session, user, "activation", activation_hours)
    await emit(
        session,
        "identity.user.provisioned",
        source=SOURCE,
        subject=user.id,
        data=ev.UserProvisioned.of(user, user_id=user.id, request_id=request_id),
    )
    return NewAccount(user, token)


async def organisation_name(session: AsyncSession, user: User) -> str | None:
    """The name of the account's organisation, for its mails (None for CAF staff)."""
    if user.organisation_id is None:
        return None
    organisation = await session.get(Organisation, user.organisation_id)
    return organisation.name if organisation is not None else None


async def mail_activation(session: AsyncSession, settings: Settings, account: NewAccount) -> None:
    """Queue the mail with the account's activation link (sent once the transaction commits)."""
    user = account.user
    name = await organisation_name(session, user)
    queue(
        session,
        activation_mail(user, account.activation_token, settings.portal_url, settings.activation_hours, name),
    )


async def create_staff(
    session: AsyncSession,
    settings: Settings,
    *,
    email: str,
    family_name: str,
    given_name: str,
    roles: list[str],
    department: str,
) -> User:
    """A CAF staff account (instructor, manager, admin, auditor) of a department, and its activation mail."""
    created = await create_account(
        session,
        email=email,
        family_name=family_name,
        given_name=given_name,
        roles=roles,
        organisation_id=None,
        department=department,
        activation_hours=settings.activation_hours,
    )
    await mail_activation(session, settings, created)
    return created.user


async def needs_second_factor(session: AsyncSession, user: User, totp_profiles: Set[str]) -> bool:
    """True when the account's roles or one of its active grants (T1, T5, ...) make TOTP mandatory."""
    profiles = (
        (
            await session.execute(
                select(col(Grant.profile)).where(col(Grant.user_id) == user.id, col(Grant.status) == "active")
            )
        )
        .scalars()
        .all()
    )
    return domain.requires_totp(user.roles, profiles, totp_profiles)


@dataclass(frozen=True)
class Activation:
    user_id: str
    totp_secret: str | None = None
    otpauth_uri: str | None = None
    qr_svg: str | None = None


async def activate(session: AsyncSession, token: str, password: str, totp_profiles: Set[str]) -> Activation:
    """Set the first (or a reset) password from a one-time link; enrol TOTP when the account needs it."""
    record = await session.get(OneTimeToken, token_digest(token), with_for_update=True)
    if record is None or record.used_at is not None or record.expires_at <= utcnow():
        raise domain.BadProof("invalid_token", "Ask your administrator for a new link.")
    user = await session.get(User, record.user_id, with_for_update=True)
    assert user is not None
    violations = check_policy(password, username=user.email, previous_hashes=user.password_history[-5:])
    if violations:
        raise domain.Invalid("password_policy", "; ".join(violations), violations=violations)
    record.used_at = utcnow()
    new_hash = hash_password(password)
    user.password_hash = new_hash
    user.password_history = [*user.password_history[-4:], new_hash]
    if user.must_reset_password:
        user.must_reset_password = False
        await account_event(session, "identity.user.reset_completed", user)
    store_guard(user, domain.LoginGuard())  # a new password starts the lockout afresh
    first_activation = user.status == "pending"
    if first_activation:
        user.status = "active"
        await account_event(session, "identity.user.activated", user)
    result = Activation(user.id)
    if user.totp_secret is None and await needs_second_factor(session, user, totp_profiles):
        user.totp_secret = new_totp_secret()
        uri = otpauth_uri(user.totp_secret, user.email)
        result = Activation(user.id, user.totp_secret, uri, qr_svg(uri))
    return result


async def _account(session: AsyncSession, user_id: str) -> User:
    return await locked(session, User, user_id, Unknown("unknown_account", "No account has this id."))


async def suspend(session: AsyncSession, user_id: str, by: str, reason: str | None = None) -> User:
    """Suspend the account: every service refuses it within seconds, its sessions end (and a
    reinstatement does not bring them back)."""
    user = await _account(session, user_id)
    if user.status != "suspended":
        user.status = "suspended"
        await end_sessions(session, user.id)
        await account_event(session, "identity.user.suspended", user, by=by, reason=reason)
    return user


async def reinstate(session: AsyncSession, user_id: str, by: str, reason: str | None = None) -> User:
    """Lift a suspension."""
    user = await _account(session, user_id)
    if user.status == "suspended":
        user.status = "active" if user.password_hash else "pending"
        await account_event(session, "identity.user.reinstated", user, by=by, reason=reason)
    return user


async def unlock(session: AsyncSession, user_id: str) -> User:
    """Lift a lockout after too many failed sign-ins, a permanent one too: the escalation restarts."""
    user = await _account(session, user_id)
    store_guard(user, domain.LoginGuard())
    return user


async def force_password_reset(session: AsyncSession, settings: Settings, user_id: str, by: str) -> User:
    """Invalidate the password (logins refused until reset) and mail a reset link."""
    user = await _account(session, user_id)
    if not user.must_reset_password:
        user.must_reset_password = True
        await account_event(session, "identity.user.reset_required", user, by=by)
    await end_sessions(session, user.id)
    hours = settings.activation_hours
    token = await issue_one_time_token(session, user, "reset", hours)
    queue(
        session, reset_mail(user, token, settings.portal_url, hours, await organisation_name(session, user))
    )
    return user


async def resend_activation(session: AsyncSession, settings: Settings, actor: Actor, user_id: str) -> User:
    """Mail a new activation link for an account not activated yet (the earlier links stop working), with
    its `identity.user.activation_resent` event: a CAF admin for any account, a partner administrator for
    their own organisation's."""
    reach = domain.activation_resender_reach(actor)
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or (reach.by == "organisation" and user.organisation_id != reach.value):
        # Another organisation's account answers like an unknown one: its existence is not theirs to learn.
        raise Unknown("unknown_account", "No account has this id.")
    if user.password_hash is not None:
        raise Conflict("already_activated", "This account already has a password.")
    await session.execute(
        update(OneTimeToken)
        .where(
            col(OneTimeToken.user_id) == user.id,
            col(OneTimeToken.purpose) == "activation",
            col(OneTimeToken.used_at).is_(None),
        )
        .values(expires_at=utcnow())
    )
    token = await issue_one_time_token(session, user, "activation", settings.activation_hours)
    await account_event(session, "identity.user.activation_resent", user, by=actor.sub)
    await mail_activation(session, settings, NewAccount(user, token))
    return user


async def account_event(
    session: AsyncSession, event_type: str, user: User, by: str | None = None, reason: str | None = None
) -> None:
    """Stage an `identity.user.*` event about `user` (the `UserRef` ones)."""
    await emit(
        session,
        event_type,
        source=SOURCE,
        subject=user.id,
        data=ev.UserRef(user_id=user.id, by=by, reason=reason),
    )


def login_guard(user: User | UnknownLogin) -> domain.LoginGuard:
    """The lockout state stored with an account (or an unknown e-mail), as the domain's `LoginGuard`."""
    return domain.LoginGuard(
        failures=tuple(datetime.fromisoformat(f) for f in user.failures),
        temporary_locks=user.temporary_locks,
        locked_until=user.locked_until,
        permanently_locked=user.permanently_locked,
    )


def store_guard(user: User | UnknownLogin, guard: domain.LoginGuard) -> None:
    """Write a lockout state back to its row."""
    user.failures = [f.isoformat() for f in guard.failures]
    user.temporary_locks, user.locked_until = guard.temporary_locks, guard.locked_until
    user.permanently_locked = guard.permanently_locked


async def end_sessions(session: AsyncSession, user_id: str) -> None:
    """Revoke every refresh-token family of the account: no session of it can be renewed."""
    await session.execute(
        update(RefreshToken).where(col(RefreshToken.user_id) == user_id).values(revoked=True)
    )


def grant_claims(
    grants: list[Grant], today: date, *, second_factor: bool, totp_profiles: Set[str]
) -> list[dict[str, str]]:
    """The `grants` claim of an access token: the active ones, valid today, and usable by their holder (a
    profile that requires TOTP is left out while the account has no enrolled second factor)."""
    return [
        {"id": g.id, "profile": g.profile, "department": g.department}
        for g in grants
        if g.status == "active"
        and g.valid_from <= today <= g.valid_until
        and (second_factor or g.profile not in totp_profiles)
    ]
