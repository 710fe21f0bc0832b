"""standing: identity's current word on accounts, grants and partner systems, checked on every call

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from cdap_shared import standing

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    standing.create_table()


def downgrade() -> None:
    op.drop_table("standing")
