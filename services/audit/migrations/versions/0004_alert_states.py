"""alert states and mails: the directory of identity's accounts and organisations (names, auditors),
each alert's review (open, acknowledged, closed; when mailed), the mail outbox

Revision ID: 0004_alert_states
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_alert_states"
down_revision = "0003"
branch_labels = None
depends_on = None

text = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "person",
        sa.Column("user_id", text(length=64), nullable=False),
        sa.Column("display_name", text(), nullable=True),
        sa.Column("email", text(length=254), nullable=True),
        sa.Column("organisation_id", text(), nullable=True),
        sa.Column("department", text(length=3), nullable=True),
        sa.Column("roles", postgresql.ARRAY(sa.String(length=40)), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index(op.f("ix_person_department"), "person", ["department"], unique=False)
    op.create_table(
        "known_organisation",
        sa.Column("organisation_id", text(length=64), nullable=False),
        sa.Column("name", text(), nullable=False),
        sa.Column("department", text(length=3), nullable=False),
        sa.PrimaryKeyConstraint("organisation_id"),
    )
    op.create_table(
        "alert_review",
        sa.Column("alert_id", text(length=64), nullable=False),
        sa.Column("state", text(length=20), nullable=False),
        sa.Column("mailed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", text(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledgement", text(), nullable=True),
        sa.Column("closed_by", text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closing_comment", text(), nullable=True),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("to", text(length=254), nullable=False),
        sa.Column("subject", text(length=200), nullable=False),
        sa.Column("body", text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # Alerts raised before the upgrade were never mailed and nobody is waiting for them: they start
    # open and count as mailed, so the first notifier run does not send a burst of old alerts.
    op.execute(
        "INSERT INTO alert_review (alert_id, state, mailed_at) SELECT alert_id, 'open', now() FROM alert"
    )


def downgrade() -> None:
    op.drop_table("mail_outbox")
    op.drop_table("alert_review")
    op.drop_table("known_organisation")
    op.drop_index(op.f("ix_person_department"), table_name="person")
    op.drop_table("person")
