"""The delivery tables every service's database holds (outbox, inbox, mail outbox), as Alembic operations.

Each service's first migration creates them from here, so their shape is declared once; later changes
to them are ordinary migrations of each service.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlmodel.sql.sqltypes import AutoString

UNSENT = sa.text("sent_at IS NULL")


def _stamp(name: str) -> sa.Column[object]:
    """A time the database sets when the row is written."""
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False)


def create_inbox() -> None:
    """Ids of the events a service has handled (its consumers' exactly-once record)."""
    op.create_table(
        "inbox",
        sa.Column("event_id", AutoString(length=64), nullable=False),
        sa.Column("topic", AutoString(length=100), nullable=False),
        _stamp("received_at"),
        sa.PrimaryKeyConstraint("event_id"),
    )


def create_outbox() -> None:
    """Events written in the transaction that caused them, for the relay to publish."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", AutoString(length=64), nullable=False),
        sa.Column("event_type", AutoString(length=100), nullable=False),
        sa.Column("topic", AutoString(length=100), nullable=False),
        sa.Column("key", AutoString(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _stamp("created_at"),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_outbox_unsent", "outbox", ["id"], unique=False, postgresql_where=UNSENT)


def create_mail_outbox() -> None:
    """Mails written in the transaction that caused them, for the mail relay to send."""
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("to", AutoString(length=254), nullable=False),
        sa.Column("subject", AutoString(length=200), nullable=False),
        sa.Column("body", AutoString(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _stamp("created_at"),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def drop_outbox() -> None:
    """Undo `create_outbox`."""
    op.drop_index("ix_outbox_unsent", table_name="outbox", postgresql_where=UNSENT)
    op.drop_table("outbox")
