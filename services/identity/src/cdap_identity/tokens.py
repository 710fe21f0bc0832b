"""The OAuth2 token endpoint's logic: password (+TOTP), client_credentials and rotating refresh tokens.

Errors follow RFC 6749 (`invalid_grant` with a description). An unknown account costs the same
password-hash verification as a wrong password, so timing does not reveal which e-mails exist.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

import asyncpg
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain, enrolment
from cdap_identity.accounts import (
    SOURCE,
    grant_claims,
    login_guard,
    needs_second_factor,
    store_guard,
    utcnow,
)
from cdap_identity.client_cache import ClientCache, SignIns
from cdap_identity.domain import BadProof, Conflict, NotPermitted, OAuthError
from cdap_identity.keys import KeyRing, issue_access_token
from cdap_identity.models import Grant, Organisation, RefreshToken, UnknownLogin, User
from cdap_identity.passwords import DUMMY_HASH, new_token, token_digest, verify_password, verify_totp
from cdap_shared import events as ev
from cdap_shared.clock import civil_today
from cdap_shared.envelope import new_event_id
from cdap_shared.outbox import emit

SEVERAL_ACCOUNTS = "several accounts use this e-mail and password: give organisation_id"


@dataclass(frozen=True)
class TokenSettings:
    ring: KeyRing
    access_seconds: int
    refresh_days: int
    totp_profiles: frozenset[str] = domain.TOTP_PROFILES
    enrolment_seconds: int = 600


async def _failed(
    session: AsyncSession, user: User | None, reason: str, ip: str | None, now: datetime
) -> None:
    if user is not None:
        guard, locks = domain.record_failure(login_guard(user), now)
        store_guard(user, guard)
        for lock in locks:
            await emit(
                session,
                "identity.user.locked",
                source=SOURCE,
                subject=user.id,
                data=ev.UserLocked(user_id=user.id, until=lock.until, permanent=lock.permanent),
            )
    await emit(
        session,
        "identity.login.failed",
        source=SOURCE,
        subject=user.id if user else "unknown",
        data=ev.LoginFailed(
            user_id=user.id if user else None, method="password", reason=reason, client_ip=ip
        ),
    )


async def _issue(
    session: AsyncSession, cfg: TokenSettings, user: User, now: datetime, family: str | None = None
) -> dict[str, object]:
    grants = (await session.execute(select(Grant).where(col(Grant.user_id) == user.id))).scalars().all()
    extra = {"email": user.email, **({"department": user.department} if user.department else {})}
    issued = issue_access_token(
        cfg.ring,
        sub=user.id,
        org=user.organisation_id,
        roles=user.roles,
        grants=grant_claims(
            list(grants),
            civil_today(now),
            second_factor=user.totp_secret is not None,
            totp_profiles=cfg.totp_profiles,
        ),
        now=now,
        lifetime=cfg.access_seconds,
        extra=extra,
    )
    refresh = new_token()
    session.add(
        RefreshToken(
            digest=token_digest(refresh),
            family_id=family or new_event_id(),
            user_id=user.id,
            expires_at=now + timedelta(days=cfg.refresh_days),
        )
    )
    return {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": cfg.access_seconds,
        "refresh_token": refresh,
    }


async def password_grant(
    session: AsyncSession,
    cfg: TokenSettings,
    username: str,
    password: str,
    totp: str | None,
    organisation_id: str | None,
    ip: str | None,
) -> dict[str, object]:
    """Log a person in; every outcome is an event, failures count towards the lockout."""
    now = utcnow()
    # Exact, case-insensitive match (never LIKE: "%" in a username must not match every account).
    stmt = select(User).where(func.lower(col(User.email)) == username.strip().lower()).with_for_update()
    if organisation_id:
        stmt = stmt.where(col(User.organisation_id) == organisation_id)
    candidates = list((await session.execute(stmt.order_by(col(User.id)))).scalars().all())
    if not candidates:
        await _unknown_login(session, username, password, ip, now)
    user = await _owner(session, candidates, password, ip, now)
    if user.totp_secret is not None:
        if not totp:
            raise OAuthError("invalid_grant", "totp required")
        step = verify_totp(user.totp_secret, totp, now, user.totp_last_step)
        if step is None:
            await _failed(session, user, "bad_totp", ip, now)
            raise OAuthError("invalid_grant", "bad credentials")
        user.totp_last_step = step
    if user.status == "suspended":
        await _failed_locked(session, user, ip, reason="suspended")
        raise OAuthError("invalid_grant", "account suspended")
    if user.must_reset_password:
        raise OAuthError("invalid_grant", "password reset required")
    if user.totp_secret is None and await needs_second_factor(session, user, cfg.totp_profiles):
        # A role or grant that requires TOTP, and none enrolled yet (e.g. T1 granted to a T2 user): no
        # token until the person enrols one, with the ticket that proves the password was right.
        ticket = await enrolment.open_ticket(session, user, now, cfg.enrolment_seconds)
        await _failed_locked(session, user, ip, reason="totp_enrolment_required")
        raise OAuthError(
            "invalid_grant",
            enrolment.TOTP_ENROLMENT_REQUIRED,
            extra={"enrolment_ticket": ticket, "expires_in": cfg.enrolment_seconds},
        )
    return await _signed_in(session, cfg, user, ip, now)


async def _signed_in(
    session: AsyncSession, cfg: TokenSettings, user: User, ip: str | None, now: datetime
) -> dict[str, object]:
    """Every factor checked: clear the lockout state, record the login, issue the tokens."""
    store_guard(user, domain.record_success(login_guard(user), now))
    await emit(
        session,
        "identity.login.succeeded",
        source=SOURCE,
        subject=user.id,
        data=ev.LoginSucceeded(user_id=user.id, method="password", client_ip=ip),
    )
    return await _issue(session, cfg, user, now)


async def _owner(
    session: AsyncSession, candidates: list[User], password: str, ip: str | None, now: datetime
) -> User:
    """The account the password opens among those using the e-mail (one per organisation, CAF staff
    apart), or the RFC 6749 error to answer.

    The password is checked against every candidate (a pending one against the dummy hash), so a
    partner's account for the same address never hides another: its owner's password opens their own.
    When several accounts match, the CAF staff one wins (CAF staff can always sign in whatever a partner
    files); otherwise the organisation is asked for, and only now, once the password is proven.
    """
    # DUMMY_HASH opens nothing: a pending account (no password yet) never matches, at the same cost.
    opened = [c for c in candidates if verify_password(c.password_hash or DUMMY_HASH, password)]
    statuses = {c.id: domain.check(login_guard(c), now) for c in candidates}
    if not opened:
        if all(not status.allowed for status in statuses.values()):
            for candidate in candidates:
                await _failed_locked(session, candidate, ip)
            raise _locked(statuses[candidates[0].id])
        for candidate in candidates:
            await _failed(session, candidate, "bad_credentials", ip, now)
        raise OAuthError("invalid_grant", "bad credentials")
    staff = [c for c in opened if c.organisation_id is None]
    if len(opened) > 1 and not staff:
        organisations = await session.execute(
            select(col(Organisation.id), col(Organisation.name))
            .where(col(Organisation.id).in_([c.organisation_id for c in opened]))
            .order_by(col(Organisation.name), col(Organisation.id))
        )
        raise OAuthError(
            "invalid_request",
            SEVERAL_ACCOUNTS,
            extra={"organisations": [{"id": id_, "name": name} for id_, name in organisations]},
        )
    user = (staff or opened)[0]
    if not statuses[user.id].allowed:
        await _failed_locked(session, user, ip)
        raise _locked(statuses[user.id])
    return user


def _locked(status: domain.LockStatus) -> OAuthError:
    return OAuthError(
        "invalid_grant", f"account locked{' until ' + status.until.isoformat() if status.until else ''}"
    )


async def confirm_enrolment(
    session: AsyncSession, cfg: TokenSettings, ticket: str, code: str, ip: str | None
) -> dict[str, object]:
    """Finish a login through TOTP enrolment: the first code from the new secret enrols it and signs in.

    Wrong codes count towards the account's lockout like wrong passwords; the account must still be
    active and unlocked. Raises `BadProof` (unknown ticket, wrong code), `Conflict` (not started) or
    `NotPermitted` (locked, not active)."""
    now = utcnow()
    record = await enrolment.live_enrolment(session, ticket, now)
    if record.secret is None:
        raise Conflict("not_started", "Start it first: POST /v1/totp/enrolment.")
    user = await session.get_one(User, record.user_id, with_for_update=True)
    status = domain.check(login_guard(user), now)
    if not status.allowed:
        raise NotPermitted("account_locked", _locked(status).description)
    if user.status != "active" or user.must_reset_password:
        raise NotPermitted("account_not_active", "Sign in again.")
    step = verify_totp(record.secret, code, now, None)
    if step is None:
        await _failed(session, user, "bad_totp", ip, now)
        raise BadProof("bad_code", "The code does not match the new key (or has expired).")
    await enrolment.complete(session, record, user, step)
    return await _signed_in(session, cfg, user, ip, now)


async def _unknown_login(
    session: AsyncSession, username: str, password: str, ip: str | None, now: datetime
) -> NoReturn:
    """An e-mail without an account: the same password cost, the same lockout, the same answers as an
    account's (a lock that appeared only for real accounts would tell which ones exist). Always raises."""
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    await session.execute(
        insert(UnknownLogin)
        .values(digest=digest, failures=[], temporary_locks=0, permanently_locked=False)
        .on_conflict_do_nothing()
    )
    phantom = await session.get_one(UnknownLogin, digest, with_for_update=True, populate_existing=True)
    status = domain.check(login_guard(phantom), now)
    verify_password(DUMMY_HASH, password)
    if not status.allowed:
        await _failed(session, None, "locked", ip, now)
        raise _locked(status)
    guard, _ = domain.record_failure(login_guard(phantom), now)
    store_guard(phantom, guard)
    phantom.updated_at = now
    await _failed(session, None, "bad_credentials", ip, now)
    raise OAuthError("invalid_grant", "bad credentials")


async def forget_unknown_logins(session: AsyncSession, now: datetime) -> int:
    """Drop the lockout state of unknown e-mails once it no longer matters: a week after the last
    attempt (longer than any temporary lock), three months for a permanent lock."""
    table = UnknownLogin.__table__  # type: ignore[attr-defined]
    stale = or_(
        (~table.c.permanently_locked) & (table.c.updated_at < now - timedelta(days=7)),
        table.c.updated_at < now - timedelta(days=90),
    )
    result = await session.execute(delete(table).where(stale))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _failed_locked(session: AsyncSession, user: User, ip: str | None, reason: str = "locked") -> None:
    await emit(
        session,
        "identity.login.failed",
        source=SOURCE,
        subject=user.id,
        data=ev.LoginFailed(user_id=user.id, method="password", reason=reason, client_ip=ip),
    )


def _secret_matches(row: asyncpg.Record, digest: str, now: datetime) -> bool:
    """The current secret, or the previous one during a rotation's overlap."""
    if hmac.compare_digest(row["secret_digest"], digest):
        return True
    previous, until = row["previous_secret_digest"], row["previous_secret_until"]
    return (
        previous is not None and until is not None and until > now and hmac.compare_digest(previous, digest)
    )


async def client_credentials_grant(
    clients: ClientCache, sign_ins: SignIns, cfg: TokenSettings, client_id: str, secret: str, ip: str | None
) -> dict[str, object]:
    """A partner system's token: its organisation and its one grant, while that grant is active and its
    holder in good standing. Decided from the client cache and signed with the key in memory: no row is
    read or written, unless the cache entry is stale or the sign-in is due for the audit log."""
    now = utcnow()
    row = await clients.get(client_id)
    if row is None or row["disabled"] or not _secret_matches(row, token_digest(secret), now):
        raise OAuthError("invalid_client", "unknown client or bad secret")
    active = row["status"] == "active" and row["valid_from"] <= civil_today(now) <= row["valid_until"]
    if not active:
        raise OAuthError("invalid_grant", "the client's habilitation is no longer active")
    if row["holder_status"] == "suspended" or row["holder_reset"]:
        raise OAuthError("invalid_grant", "the habilitation's holder is suspended or must reset")
    if row["profile"] in cfg.totp_profiles and not row["holder_enrolled"]:
        # A grant that requires TOTP is usable by nobody, its systems included, until its holder enrols.
        raise OAuthError("invalid_grant", "the habilitation's holder has not enrolled a second factor")
    claims = [{"id": row["grant_id"], "profile": row["profile"], "department": row["department"]}]
    issued = issue_access_token(
        cfg.ring,
        sub=row["id"],
        org=row["organisation_id"],
        roles=[domain.PARTNER_SYSTEM],
        grants=claims,
        now=now,
        lifetime=cfg.access_seconds,
    )
    await sign_ins.record(row["id"], ip)
    return {"access_token": issued.token, "token_type": "Bearer", "expires_in": cfg.access_seconds}


async def refresh_grant(session: AsyncSession, cfg: TokenSettings, refresh: str) -> dict[str, object]:
    """Rotate a refresh token; presenting one already used revokes its whole family (theft signal)."""
    now = utcnow()
    record = await session.get(RefreshToken, token_digest(refresh), with_for_update=True)
    if record is None or record.expires_at <= now or record.revoked:
        raise OAuthError("invalid_grant", "refresh token unknown, expired or revoked")
    if record.used_at is not None:
        await session.execute(
            update(RefreshToken).where(col(RefreshToken.family_id) == record.family_id).values(revoked=True)
        )
        # The caller commits the revoked family with the refusal.
        raise OAuthError("invalid_grant", "refresh token reused: its family is revoked")
    user = await session.get(User, record.user_id)
    if user is None or user.status != "active" or user.must_reset_password:
        raise OAuthError("invalid_grant", "account not active")
    if user.totp_secret is None and await needs_second_factor(session, user, cfg.totp_profiles):
        # Granted T1 (say) since signing in: the person signs in again and enrols a second factor.
        raise OAuthError("invalid_grant", enrolment.TOTP_ENROLMENT_REQUIRED)
    record.used_at = now
    return await _issue(session, cfg, user, now, family=record.family_id)


async def refresh_family_alive(session: AsyncSession, refresh: str) -> bool:
    """Is the sign-in session this refresh token belongs to still alive (neither revoked nor expired)?

    A token already rotated still names its family: revocation marks every token of the family."""
    record = await session.get(RefreshToken, token_digest(refresh))
    return record is not None and not record.revoked and record.expires_at > utcnow()


async def revoke_refresh(session: AsyncSession, refresh: str) -> None:
    """RFC 7009: forget a refresh token and its whole family (a real logout). Unknown tokens are fine."""
    record = await session.get(RefreshToken, token_digest(refresh))
    if record is not None:
        await session.execute(
            update(RefreshToken).where(col(RefreshToken.family_id) == record.family_id).values(revoked=True)
        )
