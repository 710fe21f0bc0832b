"""This service's tables: requests, their history and documents, projections of identity, outboxes.

Every table name starts with `access_` (the shared ones excepted): all services' models share one
SQLModel metadata when imported in one process (the test run), so names must not collide.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from cdap_shared.inbox import InboxRecord
from cdap_shared.mail import QueuedMail
from cdap_shared.outbox import OutboxRecord
from cdap_shared.standing import Standing


def _now_column(nullable: bool = False) -> Any:
    return Column(DateTime(timezone=True), server_default=func.now(), nullable=nullable)


class AccessRequest(SQLModel, table=True):
    """One request for a habilitation; `version` grows with every change (optimistic locking)."""

    __tablename__ = "access_request"
    # The queue reads a department's (or an organisation's) requests by due date; PostgreSQL sorts
    # NULL (closed requests) last, which is where they belong.
    __table_args__ = (
        Index("ix_access_request_department_queue", "department", "due", "id"),
        Index("ix_access_request_organisation_queue", "organisation_id", "due", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(default="new", max_length=10)  # "new" or "renewal"
    renews_grant_id: str | None = Field(default=None, max_length=64)
    organisation_id: str = Field(max_length=64)
    applicant: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))
    applicant_email: str = Field(max_length=254, index=True)  # lower-cased: finds duplicate requests
    profile: str = Field(max_length=20)
    department: str = Field(max_length=3)
    justification: str = Field(sa_column=Column(Text, nullable=False))
    valid_until: date
    sensitive: bool  # needs a second approval: fixed at submission, so a catalogue change mid-way is moot
    state: str = Field(default="submitted", max_length=30, index=True)
    stage: int | None = None
    due: date | None = None
    version: int = 1
    approvals: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    requested_documents: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    submitted_by: str = Field(max_length=64)
    contact_email: str | None = Field(default=None, max_length=254)
    submitted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state_since: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    reminded: bool = False  # for the current stage visit
    escalated: bool = False  # for the current stage visit
    user_id: str | None = Field(default=None, max_length=64)
    grant_id: str | None = Field(default=None, max_length=64, index=True)


class HistoryEntry(SQLModel, table=True):
    """Everything that happened to a request, in order: decisions, uploads, comments, reminders."""

    __tablename__ = "access_request_history"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    request_id: str = Field(
        sa_column=Column(String(36), ForeignKey("access_request.id"), nullable=False, index=True)
    )
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str | None = Field(default=None, max_length=64)  # None: the service itself (scheduler)
    action: str = Field(max_length=40)
    stage: int | None = None
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    documents: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    event_id: str | None = Field(default=None, max_length=64)


class Document(SQLModel, table=True):
    """A PDF the partner sent, kept in the database with its SHA-256 (the viewer checks it)."""

    __tablename__ = "access_request_document"

    id: str = Field(primary_key=True, max_length=36)
    request_id: str = Field(
        sa_column=Column(String(36), ForeignKey("access_request.id"), nullable=False, index=True)
    )
    filename: str = Field(max_length=200)
    size: int
    sha256: str = Field(max_length=64)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    uploaded_by: str = Field(max_length=64)
    uploaded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class IdempotencyRecord(SQLModel, table=True):
    """The answer to a decision sent with an `Idempotency-Key`, replayed when the same call comes again."""

    __tablename__ = "access_idempotency_key"

    actor: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=200)
    fingerprint: str = Field(max_length=64)  # SHA-256 of method, path and body
    status_code: int
    response: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=_now_column())


class PartnerOrganisation(SQLModel, table=True):
    """A partner organisation as identity last described it (`identity.organisation.*`)."""

    __tablename__ = "access_organisation"

    organisation_id: str = Field(primary_key=True, max_length=64)
    siret: str = Field(max_length=14)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=50)
    department: str = Field(max_length=3)
    convention_reference: str = Field(max_length=100)
    convention_valid_until: date
    administrators: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    delegation_withdrawn: bool = False


class IssuedGrant(SQLModel, table=True):
    """A habilitation identity issued: renewals and removal requests start from here."""

    __tablename__ = "access_grant"

    grant_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64)
    organisation_id: str = Field(max_length=64, index=True)
    profile: str = Field(max_length=20)
    department: str = Field(max_length=3)
    valid_from: date
    valid_until: date = Field(index=True)
    request_id: str | None = Field(default=None, max_length=36)
    status: str = Field(default="active", max_length=10)  # active, revoked, expired
    renewal_request_id: str | None = Field(default=None, max_length=36)
    removal_request_id: str | None = Field(default=None, max_length=36)


class RemovalRequest(SQLModel, table=True):
    """A partner administrator's request to remove one of their organisation's grants."""

    __tablename__ = "access_removal_request"

    id: str = Field(primary_key=True, max_length=36)
    grant_id: str = Field(max_length=64, index=True)
    organisation_id: str = Field(max_length=64)
    requested_by: str = Field(max_length=64)
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    requested_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_id: str = Field(max_length=64)


metadata = SQLModel.metadata
__all__ = [
    "AccessRequest",
    "Document",
    "HistoryEntry",
    "IdempotencyRecord",
    "InboxRecord",
    "IssuedGrant",
    "OutboxRecord",
    "PartnerOrganisation",
    "QueuedMail",
    "RemovalRequest",
    "Standing",
    "metadata",
]
