"""a partner-system client's previous secret, valid for the rotation's overlap

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("client", sa.Column("previous_secret_digest", sa.String(length=64), nullable=True))
    op.add_column("client", sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("client", "previous_secret_until")
    op.drop_column("client", "previous_secret_digest")
