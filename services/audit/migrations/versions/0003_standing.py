"""standing: identity's current word on accounts, grants and partner systems, checked on every call

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from cdap_shared import standing

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    standing.create_table()


def downgrade() -> None:
    op.drop_table("standing")
