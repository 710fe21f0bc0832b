"""windowed rules count per actor and minute (rule_counter) instead of one row per event

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_counter",
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("actor", "type", "decision", "minute"),
    )
    # The activity already recorded keeps counting: a running window is not reset by the upgrade.
    op.execute(
        "INSERT INTO rule_counter (actor, type, decision, minute, n) "
        "SELECT actor, type, coalesce(decision, ''), date_trunc('minute', at), count(*) "
        "FROM rule_activity GROUP BY 1, 2, 3, 4"
    )
    op.drop_index("ix_rule_activity_actor_at", table_name="rule_activity")
    op.drop_table("rule_activity")


def downgrade() -> None:
    op.create_table(
        "rule_activity",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rule_activity_actor_at", "rule_activity", ["actor", "at"], unique=False)
    # One row per counted event, at the start of its minute: what the counters can still say.
    op.execute(
        "INSERT INTO rule_activity (actor, type, decision, at) "
        "SELECT actor, type, nullif(decision, ''), minute FROM rule_counter, generate_series(1, n)"
    )
    op.drop_table("rule_counter")
