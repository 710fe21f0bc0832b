"""standing replaces user_status: identity's current word on accounts, grants and partner systems

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from cdap_shared import standing

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    standing.create_table()
    # Suspensions already projected stay in force; grants come from grant_projection's statuses.
    op.execute(
        "INSERT INTO standing (kind, subject, refusals) "
        "SELECT 'account', user_id, ARRAY['suspended'] FROM user_status WHERE suspended"
    )
    op.execute(
        "INSERT INTO standing (kind, subject, refusals, holder, valid_from, valid_until) "
        "SELECT 'grant', grant_id, CASE WHEN status = 'active' THEN '{}'::varchar[] ELSE ARRAY[status] END, "
        "user_id, valid_from, valid_until FROM grant_projection"
    )
    op.drop_table("user_status")


def downgrade() -> None:
    op.create_table(
        "user_status",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.execute(
        "INSERT INTO user_status (user_id, suspended) "
        "SELECT subject, true FROM standing WHERE kind = 'account' AND 'suspended' = ANY(refusals)"
    )
    op.drop_table("standing")
