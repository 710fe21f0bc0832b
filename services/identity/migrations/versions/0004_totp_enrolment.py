"""second factor enrolled at login: short-lived enrolment tickets

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "totp_enrolment",
        sa.Column("ticket_digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user_account.id"]),
        sa.PrimaryKeyConstraint("ticket_digest"),
    )
    op.create_index("ix_totp_enrolment_user_id", "totp_enrolment", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_totp_enrolment_user_id", table_name="totp_enrolment")
    op.drop_table("totp_enrolment")
