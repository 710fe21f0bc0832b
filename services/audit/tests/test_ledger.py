"""The ledger on PostgreSQL: a tree stored a node per row before the upgrade gives the same roots and
proofs from its tiles after it, and a batch that fails before its commit leaves the tree as it was."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cdap_audit import ledger, merkle
from cdap_audit.domain import EntryFacts, facts_from_event, leaf_bytes
from cdap_audit.merkle import MemoryStore
from cdap_audit.models import Entry
from cdap_testing import plain_dsn

from .conftest import SERVICE_DIR, consulted, suspended

pytestmark = pytest.mark.stack

BEFORE_TILES = "0004_alert_states"
OLD = 65_600  # crosses the first full level-1 tile (65,536 leaves)


def facts(tag: str, n: int) -> list[EntryFacts]:
    return [facts_from_event(suspended(f"{tag}-{i}")) for i in range(n)]


def leaf_hashes(batch: list[EntryFacts]) -> list[bytes]:
    return [merkle.leaf_hash(leaf_bytes(f)) for f in batch]


@asynccontextmanager
async def sessions(url: str) -> AsyncIterator[Callable[[], AsyncSession]]:
    engine = create_async_engine(url, pool_size=2)
    try:
        yield lambda: AsyncSession(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


async def same_roots_and_proofs(session: AsyncSession, nodes: MemoryStore, sizes: list[int]) -> None:
    """Roots, inclusion and consistency proofs read from the database are those of `nodes`."""
    for size in sizes:
        assert await ledger.root_at(session, size) == merkle.root(nodes, size), size
        for index in {0, 255, 256, size // 2, size - 1} & set(range(size)):
            proof = await ledger.inclusion(session, index, size)
            assert proof == merkle.inclusion_proof(nodes, index, size), (index, size)
        for first in {1, 256, 257, size // 3, size - 1} & set(range(1, size + 1)):
            proof = await ledger.consistency(session, first, size)
            assert proof == merkle.consistency_proof(nodes, first, size), (first, size)


def test_an_entry_row_holds_every_fact_in_the_column_of_its_name() -> None:
    """The row written for an entry follows the `entry` table's declaration: each column gets the
    `EntryFacts` attribute of its name, and every fact but `refs` (hashed in the leaf only) has one."""
    facts = facts_from_event(consulted("agent-7", "1234567", trace_id="0af7651916cd43dd8448eb211c80319c"))
    row = dict(zip(ledger.ENTRY_COLUMNS, ledger.entry_row(41, facts, b"leaf"), strict=True))
    assert set(row) == {column.name for column in Entry.__table__.columns} - {"recorded_at"}
    facts_fields = {f.name for f in dataclasses.fields(EntryFacts)} - {"refs"}
    assert {name: row[name] for name in facts_fields - {"sections"}} == {
        name: getattr(facts, name) for name in facts_fields - {"sections"}
    }
    assert (row["leaf_index"], row["leaf"], row["dossier"]) == (41, b"leaf", "1234567")
    assert row["sections"] == '["adresse","identite"]' == orjson.dumps(list(facts.sections)).decode()
    assert (row["actor"], row["decision"], row["client_ip"]) == ("agent-7", "granted", "10.1.2.3")


async def test_nodes_stored_before_the_upgrade_give_the_same_roots_and_proofs_from_tiles(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    """A log of 65,600 leaves written at the previous schema (a `merkle_node` row per complete
    subtree) is upgraded to tiles: every root and proof is unchanged, the ingestion carries on from
    the tiles, and the downgrade gives back the very rows a node per row would hold."""
    url = await make_database()
    await migrate(url, BEFORE_TILES)
    nodes = MemoryStore()
    _, written = merkle.append_leaves(nodes, 0, [merkle.leaf_hash(b"old-%d" % i) for i in range(OLD)])
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.copy_records_to_table("merkle_node", records=written, columns=("level", "idx", "hash"))
        await conn.execute("UPDATE tree_state SET size = $1 WHERE id = 1", OLD)
        await migrate(url, "head")
        # 257 leaf tiles, one level-1 tile of 256 hashes, one level-2 tile of one hash.
        assert await conn.fetchval("SELECT count(*) FROM merkle_tile") == 257 + 1 + 1

        async with sessions(url) as session_of:
            async with session_of() as session:
                sizes = [1, 2, 255, 256, 257, 4097, 65_535, 65_536, 65_537, OLD]
                await same_roots_and_proofs(session, nodes, sizes)
            frontier = ledger.Frontier()
            for tag in ("a", "b"):
                batch = facts(tag, 300)
                async with session_of() as session, session.begin():
                    await ledger.append(session, batch, frontier)
                merkle.append_leaves(nodes, OLD + (300 if tag == "b" else 0), leaf_hashes(batch))
            async with session_of() as session:
                await same_roots_and_proofs(session, nodes, [OLD + 1, OLD + 300, OLD + 600])

        await migrate(url, BEFORE_TILES, down=True)
        rows = await conn.fetch("SELECT level, idx, hash FROM merkle_node")
        assert {(r["level"], r["idx"], bytes(r["hash"])) for r in rows} == set(nodes)
    finally:
        await conn.close()


async def test_a_batch_failing_before_its_commit_leaves_a_tree_the_next_ones_extend(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    """A batch written then rolled back (the process died before the commit) leaves no tile change:
    the next batch, through the same `Frontier` or another process's, appends where the committed tree
    ends, and its roots and proofs are those of the committed leaves only."""
    url = await make_database()
    await migrate(url, "head")
    nodes = MemoryStore()
    committed: list[EntryFacts] = []
    async with sessions(url) as session_of:

        async def commit(batch: list[EntryFacts], frontier: ledger.Frontier) -> None:
            async with session_of() as session, session.begin():
                assert await ledger.append(session, batch, frontier) == len(committed)
            merkle.append_leaves(nodes, len(committed), leaf_hashes(batch))
            committed.extend(batch)

        mine, another = ledger.Frontier(), ledger.Frontier()
        await commit(facts("a", 250), mine)
        with pytest.raises(RuntimeError):
            async with session_of() as session, session.begin():
                await ledger.append(session, facts("lost", 300), mine)  # would fill tile 0, start tile 1
                raise RuntimeError("killed before the commit")
        await commit(facts("b", 10), mine)  # crosses the tile boundary the lost batch had crossed
        await commit(facts("c", 300), another)  # another replica
        await commit(facts("d", 3), mine)  # after the other's batch: the edge is read again
        async with session_of() as session:
            assert await ledger.committed_size(session) == 563
            await same_roots_and_proofs(session, nodes, [250, 256, 260, 512, 560, 563])
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        leaves = await conn.fetch("SELECT leaf FROM entry ORDER BY leaf_index")
        assert [merkle.leaf_hash(bytes(r["leaf"])) for r in leaves] == leaf_hashes(committed)
        widths = await conn.fetch(
            "SELECT level, idx, length(hashes) / 32 AS w FROM merkle_tile ORDER BY 1, 2"
        )
        assert [tuple(r) for r in widths] == [(0, 0, 256), (0, 1, 256), (0, 2, 51), (1, 0, 2)]
    finally:
        await conn.close()


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    from alembic.command import downgrade, upgrade
    from alembic.config import Config

    config = Config(f"{SERVICE_DIR}/alembic.ini")
    config.set_main_option("script_location", f"{SERVICE_DIR}/migrations")
    config.attributes["database_url"] = url
    await asyncio.to_thread(downgrade if down else upgrade, config, revision)
