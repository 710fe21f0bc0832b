"""the Merkle tree in tiles (`merkle_tile`: 256 hashes of one level per row) instead of a row per node

Every eighth level's nodes are regrouped 256 to a row, in index order (C2SP tlog-tiles' layout, see
`cdap_audit.tiles`); the levels between are recomputed from them when read, so `merkle_node` goes.
The downgrade recomputes those levels (`sha256()` in PostgreSQL) and gives back the very same rows.

Revision ID: 0005_merkle_tiles
Revises: 0004_alert_states
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_merkle_tiles"
down_revision = "0004_alert_states"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merkle_tile",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hashes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    # Hashes do not compress: PostgreSQL should not try on every write of a tile.
    op.execute("ALTER TABLE merkle_tile ALTER COLUMN hashes SET STORAGE EXTERNAL")
    # A tile takes its nodes from its first on, up to the first one missing (none is, in a log
    # that is whole): a gap would shift the hashes after it to the wrong places.
    op.execute(
        """
        INSERT INTO merkle_tile (level, idx, hashes)
        SELECT level / 8, idx / 256, string_agg(hash, ''::bytea ORDER BY idx)
        FROM (
            SELECT level, idx, hash,
                   idx % 256 = row_number() OVER (PARTITION BY level, idx / 256 ORDER BY idx) - 1 AS in_place
            FROM merkle_node
            WHERE level % 8 = 0
        ) AS stored
        WHERE in_place
        GROUP BY level / 8, idx / 256
        """
    )
    op.drop_table("merkle_node")


def downgrade() -> None:
    op.create_table(
        "merkle_node",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.execute(
        """
        INSERT INTO merkle_node (level, idx, hash)
        SELECT level * 8, idx * 256 + i, substring(hashes FROM i * 32 + 1 FOR 32)
        FROM merkle_tile, generate_series(0, length(hashes) / 32 - 1) AS i
        """
    )
    # The levels between, bottom up: two sibling nodes make their parent (RFC 9162's 0x01 prefix).
    parents = sa.text(
        """
        INSERT INTO merkle_node (level, idx, hash)
        SELECT l.level + 1, l.idx / 2, sha256('\\x01'::bytea || l.hash || r.hash)
        FROM merkle_node AS l JOIN merkle_node AS r ON r.level = l.level AND r.idx = l.idx + 1
        WHERE l.level % 8 = :below AND l.idx % 2 = 0
        """
    )
    for rise in range(1, 8):
        op.execute(parents.bindparams(below=rise - 1))
    op.drop_table("merkle_tile")
