"""Service functions for organisations and accounts: each change and its event in one transaction."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.models import Grant, OneTimeToken, Organisation, RefreshToken, User
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
from cdap_shared.outbox import emit
from cdap_shared.problems import Problem

SOURCE = "/cdap/identity"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewAccount:
    """An account just created, with the one-time activation token to mail (never stored in clear)."""

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
        raise Problem(
            409, "Account exists", "This person already has an account here.", reason="account_exists"
        )
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
        data=ev.UserProvisioned(
            user_id=user.id,
            organisation_id=organisation_id,
            roles=user.roles,
            department=department,
            request_id=request_id,
            email=user.email,
            family_name=family_name,
            given_name=given_name,
        ),
    )
    return NewAccount(user, token)


async def register_organisation(
    session: AsyncSession, org: Organisation, admins: list[tuple[str, str, str]], activation_hours: int
) -> list[NewAccount]:
    """Create the organisation and its partner administrators (e-mail, family name, given name)."""
    if not domain.valid_siret(org.siret):
        raise Problem(422, "Invalid SIRET", "The SIRET's check digit is wrong.", reason="invalid_siret")
    if (await session.execute(select(Organisation).where(col(Organisation.siret) == org.siret))).first():
        raise Problem(
            409, "Organisation exists", "An organisation with this SIRET exists.", reason="siret_exists"
        )
    session.add(org)
    await session.flush()
    accounts = [
        await create_account(
            session,
            email=email,
            family_name=family,
            given_name=given,
            roles=[domain.PARTNER_ADMIN],
            organisation_id=org.id,
            department=org.department,
            activation_hours=activation_hours,
        )
        for email, family, given in admins
    ]
    await publish_organisation(session, org, "identity.organisation.registered")
    return accounts


async def publish_organisation(session: AsyncSession, org: Organisation, event_type: str) -> None:
    admins = (
        (
            await session.execute(
                select(col(User.id)).where(
                    col(User.organisation_id) == org.id, col(User.roles).contains([domain.PARTNER_ADMIN])
                )
            )
        )
        .scalars()
        .all()
    )
    await emit(
        session,
        event_type,
        source=SOURCE,
        subject=org.id,
        data=ev.OrganisationRegistered(
            organisation_id=org.id,
            siret=org.siret,
            name=org.name,
            kind=org.kind,
            department=org.department,
            convention_reference=org.convention_reference,
            convention_valid_until=org.convention_valid_until,
            administrators=sorted(admins),
            delegation_withdrawn=org.delegation_withdrawn,
        ),
    )


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
        raise Problem(
            400, "Invalid or expired link", "Ask your administrator for a new link.", reason="invalid_token"
        )
    user = await session.get(User, record.user_id, with_for_update=True)
    assert user is not None
    violations = check_policy(password, username=user.email, previous_hashes=user.password_history[-5:])
    if violations:
        raise Problem(
            422, "Password refused", "; ".join(violations), reason="password_policy", violations=violations
        )
    record.used_at = utcnow()
    new_hash = hash_password(password)
    user.password_hash = new_hash
    user.password_history = [*user.password_history[-4:], new_hash]
    if user.must_reset_password:
        user.must_reset_password = False
        await account_event(session, "identity.user.reset_completed", user)
    user.failures, user.temporary_locks, user.locked_until, user.permanently_locked = [], 0, None, False
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


async def set_status(
    session: AsyncSession, user_id: str, action: str, by: str, reason: str | None = None
) -> User:
    """suspend | reinstate | unlock, each with its event."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise Problem(404, "Unknown account")
    if action == "suspend" and user.status != "suspended":
        user.status = "suspended"
        await end_sessions(session, user.id)  # and a reinstatement does not bring them back
        await account_event(session, "identity.user.suspended", user, by=by, reason=reason)
    elif action == "reinstate" and user.status == "suspended":
        user.status = "active" if user.password_hash else "pending"
        await account_event(session, "identity.user.reinstated", user, by=by, reason=reason)
    elif action == "unlock":
        user.failures, user.temporary_locks, user.locked_until, user.permanently_locked = [], 0, None, False
    return user


async def force_password_reset(session: AsyncSession, user_id: str, by: str, hours: int) -> tuple[User, str]:
    """Invalidate the password (logins refused until reset) and issue a reset link."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise Problem(404, "Unknown account")
    if not user.must_reset_password:
        user.must_reset_password = True
        await account_event(session, "identity.user.reset_required", user, by=by)
    await end_sessions(session, user.id)
    token = await issue_one_time_token(session, user, "reset", hours)
    return user, token


async def resend_activation(
    session: AsyncSession, user_id: str, by: str, organisation_id: str | None, hours: int
) -> tuple[User, str]:
    """A new activation link for an account not activated yet (the earlier links stop working), with its
    `identity.user.activation_resent` event. `organisation_id`: the caller's organisation when they are a
    partner administrator, who may only do it for their own organisation's accounts; None for a CAF admin."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or (organisation_id is not None and user.organisation_id != organisation_id):
        # Another organisation's account answers like an unknown one: its existence is not theirs to learn.
        raise Problem(404, "Unknown account")
    if user.password_hash is not None:
        raise Problem(
            409, "Already activated", "This account already has a password.", reason="already_activated"
        )
    await session.execute(
        update(OneTimeToken)
        .where(
            col(OneTimeToken.user_id) == user.id,
            col(OneTimeToken.purpose) == "activation",
            col(OneTimeToken.used_at).is_(None),
        )
        .values(expires_at=utcnow())
    )
    token = await issue_one_time_token(session, user, "activation", hours)
    await account_event(session, "identity.user.activation_resent", user, by=by)
    return user, token


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
