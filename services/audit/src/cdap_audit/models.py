"""This service's tables: the append-only log, its Merkle tree's tiles, checkpoints, alerts.

`entry` is range-partitioned by month on `recorded_at` (ingestion time): retention drops whole
months, and each partition's indexes stay small. The partitions themselves live in the
`audit_partitions` schema, which Alembic's autogenerate does not look at (see `partitions.py`).
A partitioned table's primary key must contain the partition key, hence `(leaf_index, recorded_at)`;
uniqueness of `leaf_index` comes from the row lock on `tree_state`, and of `event_id` from the inbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from cdap_shared.inbox import InboxRecord
from cdap_shared.mail import QueuedMail
from cdap_shared.outbox import OutboxRecord
from cdap_shared.standing import Standing


def _now_column(**kw: Any) -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), server_default=func.now(), nullable=False, **kw),
    )


class Entry(SQLModel, table=True):
    """One audited event: its leaf position, the references kept, and the exact bytes hashed."""

    __tablename__ = "entry"
    __table_args__ = (
        Index("ix_entry_actor", "actor", "leaf_index"),
        Index("ix_entry_dossier", "dossier", "leaf_index", postgresql_where=text("dossier IS NOT NULL")),
        Index("ix_entry_type", "type", "leaf_index"),
        Index("ix_entry_trace", "trace_id", postgresql_where=text("trace_id IS NOT NULL")),
        Index("ix_entry_event", "event_id"),
        Index("ix_entry_time", "time"),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    leaf_index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    recorded_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), server_default=func.now(), primary_key=True),
    )
    event_id: str
    type: str
    source: str
    time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    subject: str
    dossier: str | None = None
    actor: str | None = None
    organisation_id: str | None = None
    profile: str | None = None
    decision: str | None = None
    reason: str | None = None
    motif: str | None = None
    sections: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    client_ip: str | None = None
    trace_id: str | None = None
    leaf: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class TreeState(SQLModel, table=True):
    """One row: the committed tree size. Locked (`FOR UPDATE`) by whoever appends, so replicas agree."""

    __tablename__ = "tree_state"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class MerkleTile(SQLModel, table=True):
    """Up to 256 hashes of one tree level, concatenated (see `tiles.py`): extended until full, then
    never updated; kept after retention. Its hashes are stored uncompressed (`STORAGE EXTERNAL`)."""

    __tablename__ = "merkle_tile"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hashes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class CheckpointRecord(SQLModel, table=True):
    """A signed checkpoint (C2SP signed note); one per tree size."""

    __tablename__ = "checkpoint"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    origin: str
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    root_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    note: str
    signed_at: datetime | None = _now_column()


class SigningKey(SQLModel, table=True):
    """The generated note signing key, when `CDAP_AUDIT_SIGNING_KEY` is not set (one row)."""

    __tablename__ = "signing_key"

    id: int = Field(default=1, primary_key=True)
    signer_key: str
    verifier_key: str
    created_at: datetime | None = _now_column()


class AlertRecord(SQLModel, table=True):
    """An alert raised by a rule; `dedup_key` keeps it to one per rule, actor and cooldown period."""

    __tablename__ = "alert"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    alert_id: str = Field(unique=True)
    rule: str = Field(index=True)
    severity: str
    actor: str | None = Field(default=None, index=True)
    organisation_id: str | None = None
    detail: str
    entry_index: int = Field(sa_column=Column(BigInteger, nullable=False))
    event_time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    dedup_key: str = Field(unique=True)
    raised_at: datetime | None = _now_column()


class RuleCounter(SQLModel, table=True):
    """How many counted events an actor had of one type and decision in one minute (windowed rules).

    One row per actor, type, decision and minute, added to once per batch: a rule's cost depends on
    its window's length in minutes, not on how busy the actor is. Rows older than the longest window
    (plus a margin) are purged. `decision` is "" for events without one (a key column cannot be NULL).
    """

    __tablename__ = "rule_counter"

    actor: str = Field(primary_key=True)
    type: str = Field(primary_key=True)
    decision: str = Field(default="", primary_key=True)
    minute: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    n: int = Field(sa_column=Column(Integer, nullable=False))


class Person(SQLModel, table=True):
    """An account as identity described it (`identity.user.provisioned`): its name is shown beside its
    id when entries and alerts are read (never hashed), its e-mail, roles and department say which
    auditors an alert is mailed to."""

    __tablename__ = "person"

    user_id: str = Field(primary_key=True, max_length=64)
    display_name: str | None = None
    email: str | None = Field(default=None, max_length=254)
    organisation_id: str | None = None
    department: str | None = Field(default=None, max_length=3, index=True)
    roles: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(String(40)), nullable=False, server_default="{}")
    )


class KnownOrganisation(SQLModel, table=True):
    """A partner organisation's name and department, as identity last published them."""

    __tablename__ = "known_organisation"

    organisation_id: str = Field(primary_key=True, max_length=64)
    name: str
    department: str = Field(max_length=3)


class AlertReview(SQLModel, table=True):
    """What became of an alert: its state (open, acknowledged, closed), the auditors' comments, and
    when it was mailed. Written once the notifier has seen the alert (no row yet: new, open)."""

    __tablename__ = "alert_review"

    alert_id: str = Field(primary_key=True, max_length=64)
    state: str = Field(default="open", max_length=20)
    mailed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    acknowledgement: str | None = None
    closed_by: str | None = None
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    closing_comment: str | None = None


metadata = SQLModel.metadata
__all__ = [
    "AlertRecord",
    "AlertReview",
    "CheckpointRecord",
    "Entry",
    "InboxRecord",
    "KnownOrganisation",
    "MerkleTile",
    "OutboxRecord",
    "Person",
    "QueuedMail",
    "RuleCounter",
    "SigningKey",
    "Standing",
    "TreeState",
    "metadata",
]
