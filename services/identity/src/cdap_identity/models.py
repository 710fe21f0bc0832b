"""The identity service's tables: organisations, accounts, habilitations, clients, tokens and keys."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from cdap_shared.envelope import new_event_id
from cdap_shared.inbox import InboxRecord
from cdap_shared.mail import QueuedMail
from cdap_shared.outbox import OutboxRecord


def _now_column(nullable: bool = False) -> Any:
    return Column(
        DateTime(timezone=True), server_default=func.now() if not nullable else None, nullable=nullable
    )


class Organisation(SQLModel, table=True):
    """A partner body under convention with its departmental CAF."""

    __tablename__ = "organisation"

    id: str = Field(default_factory=new_event_id, primary_key=True, max_length=64)
    siret: str = Field(max_length=14, unique=True)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=40)
    department: str = Field(max_length=3)
    convention_reference: str = Field(max_length=100)
    convention_valid_until: date
    delegation_withdrawn: bool = False
    created_at: datetime | None = Field(default=None, sa_column=_now_column())


class User(SQLModel, table=True):
    """An account: a partner's staff member or administrator, or CAF staff (no organisation)."""

    __tablename__ = "user_account"
    __table_args__ = (
        # One account per person and organisation (CAF staff: per person).
        Index("ux_user_email_org", text("lower(email)"), text("coalesce(organisation_id, '')"), unique=True),
    )

    id: str = Field(default_factory=new_event_id, primary_key=True, max_length=64)
    email: str = Field(max_length=254, index=True)
    family_name: str = Field(max_length=100)
    given_name: str = Field(max_length=100)
    organisation_id: str | None = Field(default=None, foreign_key="organisation.id", max_length=64)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    department: str | None = Field(default=None, max_length=3)
    job_title: str | None = Field(default=None, max_length=200)
    status: str = Field(default="pending", max_length=12)  # pending | active | suspended
    password_hash: str | None = Field(default=None, max_length=200)
    password_history: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    must_reset_password: bool = False
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_last_step: int | None = None
    failures: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    temporary_locks: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))
    permanently_locked: bool = False
    created_at: datetime | None = Field(default=None, sa_column=_now_column())


class UnknownLogin(SQLModel, table=True):
    """Lockout state of an e-mail that has no account. Failures against it lock exactly as an account's
    do, so "account locked" never tells an attacker that the account exists. Keyed by the SHA-256 of
    the normalised address: the addresses people mistype are not kept."""

    __tablename__ = "unknown_login"

    digest: str = Field(primary_key=True, max_length=64)
    failures: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    temporary_locks: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))
    permanently_locked: bool = False
    updated_at: datetime | None = Field(default=None, sa_column=_now_column())


class OneTimeToken(SQLModel, table=True):
    """An activation or password-reset link; only its SHA-256 digest is kept."""

    __tablename__ = "one_time_token"

    digest: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="user_account.id", max_length=64, index=True)
    purpose: str = Field(max_length=12)  # activation | reset
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))


class Grant(SQLModel, table=True):
    """A habilitation: a profile in a department for one account, for a bounded period."""

    __tablename__ = "grant_habilitation"

    id: str = Field(default_factory=new_event_id, primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="user_account.id", max_length=64, index=True)
    organisation_id: str = Field(foreign_key="organisation.id", max_length=64, index=True)
    profile: str = Field(max_length=20)
    department: str = Field(max_length=3, index=True)
    valid_from: date
    valid_until: date = Field(index=True)
    request_id: str | None = Field(default=None, max_length=64, unique=True)
    status: str = Field(default="active", max_length=10)  # active | revoked | expired
    ended_at: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))
    ended_by: str | None = Field(default=None, max_length=64)


class Client(SQLModel, table=True):
    """A partner system using `client_credentials`, bound to one organisation and one grant."""

    __tablename__ = "client"

    id: str = Field(primary_key=True, max_length=64)
    secret_digest: str = Field(max_length=64)
    name: str = Field(max_length=100)
    organisation_id: str = Field(foreign_key="organisation.id", max_length=64)
    grant_id: str = Field(foreign_key="grant_habilitation.id", max_length=64)
    created_by: str = Field(max_length=64)
    disabled: bool = False
    created_at: datetime | None = Field(default=None, sa_column=_now_column())
    # After a rotation the previous secret keeps working until this moment (the overlap, 0 by default).
    previous_secret_digest: str | None = Field(default=None, max_length=64)
    previous_secret_until: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))


class RefreshToken(SQLModel, table=True):
    """A rotating refresh token; reuse of a used one revokes its whole family."""

    __tablename__ = "refresh_token"

    digest: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=64, index=True)
    user_id: str = Field(foreign_key="user_account.id", max_length=64)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))
    revoked: bool = False


class SigningKeyRecord(SQLModel, table=True):
    """An Ed25519 signing key (PKCS#8 PEM); replicas share the ring through this table."""

    __tablename__ = "jwt_signing_key"  # "signing_key" alone would clash with audit's table

    kid: str = Field(primary_key=True, max_length=64)
    pem: str
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    retired_at: datetime | None = Field(default=None, sa_column=_now_column(nullable=True))


metadata = SQLModel.metadata
__all__ = [
    "Client",
    "Grant",
    "InboxRecord",
    "OneTimeToken",
    "Organisation",
    "OutboxRecord",
    "QueuedMail",
    "RefreshToken",
    "SigningKeyRecord",
    "User",
    "metadata",
]
