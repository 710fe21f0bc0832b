"""The log itself: append entries to the Merkle tree inside the consumer's transaction, read proofs.

Appending
    A batch is appended at once. It first locks the one `tree_state` row (`FOR UPDATE`): replicas
    consuming other partitions wait there, so leaf indices are gapless and never assigned twice. It
    needs the tiles at the tree's right edge (`tiles`: those holding its frontier, the compact range,
    at most one partial tile per tile level); a :class:`Frontier` keeps them in memory from one
    committed batch to the next, and they are read from the database when the committed size is not
    the one it expects (first batch, another replica appended, a batch rolled back or its commit was
    lost). The batch's leaves and the subtrees they complete are computed in memory, O(log n) per
    entry; the entries are written with COPY, the tiles they extended with one upsert (a tile per 256
    leaves, plus the partial ones), then the new size: everything in the caller's transaction, which
    also holds the inbox marks, so a crash loses or doubles nothing.

Reading
    A root or proof needs a few nodes (`merkle.frontier`, `*_proof_nodes`): the tiles holding them are
    fetched in one query into a `TileStore` and the pure functions of `merkle` run on it. Only
    committed sizes are ever served, and every tile hash of a committed size was committed in the same
    transaction.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg
import orjson
from sqlalchemy import event, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cdap_audit import merkle
from cdap_audit.domain import EntryFacts, leaf_bytes
from cdap_audit.merkle import NodeKey
from cdap_audit.models import Entry, MerkleTile, TreeState
from cdap_audit.tiles import TileRow, TileStore, tile_keys

ENTRY = Entry.__table__  # type: ignore[attr-defined]
TILE = MerkleTile.__table__  # type: ignore[attr-defined]
STATE = TreeState.__table__  # type: ignore[attr-defined]

# The row of an entry follows the `entry` table's declaration: its index, then the columns named like
# `EntryFacts`' attributes, `sections` (JSON text) and the leaf bytes; `recorded_at` is the database's.
_FACT_COLUMNS = tuple(
    column.name
    for column in ENTRY.columns
    if column.name not in ("leaf_index", "recorded_at", "sections", "leaf")
)
ENTRY_COLUMNS = ("leaf_index", *_FACT_COLUMNS, "sections", "leaf")
_facts_of = operator.attrgetter(*_FACT_COLUMNS)

UPSERT_TILES = (
    "INSERT INTO merkle_tile (level, idx, hashes) "
    "SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[]) "
    "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes"
)


def entry_row(index: int, facts: EntryFacts, leaf: bytes) -> tuple[Any, ...]:
    """The `entry` row of `facts` at `index`, in `ENTRY_COLUMNS` order (`sections` as JSON text)."""
    return (index, *_unindexed_row(facts, leaf))


def _unindexed_row(facts: EntryFacts, leaf: bytes) -> tuple[Any, ...]:
    return (*_facts_of(facts), orjson.dumps(facts.sections).decode(), leaf)


class Leaf(NamedTuple):
    """An entry as far as it goes before it has an index: its facts, its `entry` row but the index,
    its leaf hash. Computed apart from the append (`leaf_of`), e.g. while the previous batch commits."""

    facts: EntryFacts
    row: tuple[Any, ...]
    hash: bytes


def leaf_of(facts: EntryFacts) -> Leaf:
    """The leaf of `facts`: all an append needs, computed ahead of it."""
    leaf = leaf_bytes(facts)
    return Leaf(facts, _unindexed_row(facts, leaf), merkle.leaf_hash(leaf))


class Frontier:
    """The tiles of the tree's right edge as of the last batch this process committed, or nothing
    known yet; `on_commit` is called after each such commit."""

    def __init__(self, on_commit: Callable[[], None] | None = None) -> None:
        self._size = -1
        self._edge = TileStore()
        self._on_commit = on_commit

    def at(self, size: int) -> TileStore | None:
        """A copy of the edge if the committed tree has `size` leaves as expected, else None."""
        return self._edge.edge(merkle.frontier(size)) if size == self._size else None

    def keep_on_commit(self, session: AsyncSession, size: int, store: TileStore) -> None:
        """Remember `store`'s edge at `size` once (and only if) the session's transaction commits."""
        kept = store.edge(merkle.frontier(size))
        self._size = -1  # until the commit: a rollback leaves nothing to trust

        def committed(_: Session) -> None:
            self._size, self._edge = size, kept
            if self._on_commit is not None:
                self._on_commit()

        event.listen(session.sync_session, "after_commit", committed, once=True)


class Appending(NamedTuple):
    """A batch given its leaf indices under the tree lock, its rows and tiles computed, not yet written."""

    first: int
    new_size: int
    store: TileStore
    rows: list[tuple[Any, ...]]
    tiles: list[TileRow]


async def prepare(
    session: AsyncSession, batch: Sequence[Leaf], frontier: Frontier | None = None
) -> Appending:
    """Lock the tree and give `batch` the next leaf indices, in order; its entries' rows and the tiles
    it extends are computed, nothing is written yet (`write`). `frontier`, when given, spares reading
    the tree's right edge."""
    size = await lock_size(session)
    store = frontier.at(size) if frontier is not None else None
    if store is None:
        store = await load_tiles(session, merkle.frontier(size))
    new_size, _ = merkle.append_leaves(store, size, [leaf.hash for leaf in batch])
    rows = [(size + i, *leaf.row) for i, leaf in enumerate(batch)]
    return Appending(size, new_size, store, rows, store.changed_rows())


async def write(session: AsyncSession, appending: Appending, frontier: Frontier | None = None) -> None:
    """Write a prepared batch's entries, tiles and the new size in the caller's transaction.

    It only uses the session's connection: the caller may compute meanwhile (the rules) as long as it
    sends nothing else on the session until this is done."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection  # asyncpg: COPY, in the session's open transaction
    assert driver is not None
    await driver.copy_records_to_table("entry", records=appending.rows, columns=ENTRY_COLUMNS)
    await upsert_tiles(driver, appending.tiles)
    await driver.execute("UPDATE tree_state SET size = $1 WHERE id = 1", appending.new_size)
    if frontier is not None:
        frontier.keep_on_commit(session, appending.new_size, appending.store)


async def upsert_tiles(connection: asyncpg.Connection, tiles: Sequence[TileRow]) -> None:
    """Write `tiles` whole, new or extended, in one statement on an asyncpg connection."""
    if tiles:
        levels, indices, hashes = zip(*tiles, strict=True)
        await connection.execute(UPSERT_TILES, levels, indices, hashes)


async def append(session: AsyncSession, batch: Sequence[EntryFacts], frontier: Frontier | None = None) -> int:
    """Give `batch` the next leaf indices, in order, and write it in the caller's transaction;
    returns the first index. `frontier`, when given, spares reading the tree's frontier."""
    appending = await prepare(session, [leaf_of(facts) for facts in batch], frontier)
    await write(session, appending, frontier)
    return appending.first


async def lock_size(session: AsyncSession) -> int:
    """The committed tree size, with the row locked until the end of the caller's transaction."""
    query = select(STATE.c.size).where(STATE.c.id == 1).with_for_update()
    size = (await session.execute(query)).scalar_one_or_none()
    if size is None:  # a database created without the migration's row
        await session.execute(text("INSERT INTO tree_state (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING"))
        size = (await session.execute(query)).scalar_one()
    return int(size)


async def committed_size(session: AsyncSession) -> int:
    size = (await session.execute(select(STATE.c.size).where(STATE.c.id == 1))).scalar_one_or_none()
    return int(size or 0)


async def load_tiles(session: AsyncSession, nodes: Iterable[NodeKey]) -> TileStore:
    """The stored tiles holding `nodes`, in one query."""
    wanted = tile_keys(nodes)
    if not wanted:
        return TileStore()
    rows = await session.execute(
        select(TILE.c.level, TILE.c.idx, TILE.c.hashes).where(tuple_(TILE.c.level, TILE.c.idx).in_(wanted))
    )
    return TileStore((level, idx, bytes(hashes)) for level, idx, hashes in rows.all())


async def root_at(session: AsyncSession, size: int) -> bytes:
    """The root of the committed tree's first `size` leaves."""
    return merkle.root(await load_tiles(session, merkle.frontier(size)), size)


async def inclusion(session: AsyncSession, index: int, size: int) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `size` leaves."""
    store = await load_tiles(session, merkle.inclusion_proof_nodes(index, size))
    return merkle.inclusion_proof(store, index, size)


async def consistency(session: AsyncSession, first: int, second: int) -> list[bytes]:
    """The proof that the tree of `first` leaves is a prefix of the tree of `second`."""
    store = await load_tiles(session, merkle.consistency_proof_nodes(first, second))
    return merkle.consistency_proof(store, first, second)
