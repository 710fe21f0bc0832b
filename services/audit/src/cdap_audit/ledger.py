"""The log itself: append entries to the Merkle tree inside the consumer's transaction, read proofs.

Appending
    A batch is appended at once. It first locks the one `tree_state` row (`FOR UPDATE`): replicas
    consuming other partitions wait there, so leaf indices are gapless and never assigned twice. It
    needs the tree's frontier (its compact range: at most one node per level); a :class:`Frontier`
    keeps it in memory from one committed batch to the next, and it is read from the database when
    the committed size is not the one it expects (first batch, another replica appended, a batch
    rolled back or its commit was lost). The batch's leaves and newly completed subtree nodes are
    computed in memory, O(log n) per entry, and written with COPY, then the new size: everything in
    the caller's transaction, which also holds the inbox marks, so a crash loses or doubles nothing.

Reading
    A root or proof needs a few nodes (`merkle.frontier`, `*_proof_nodes`): they are fetched in one
    query into a `MemoryStore` and the pure functions of `merkle` run on it. Only committed sizes are
    ever served, and every node of a committed size was committed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import event, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cdap_audit import merkle
from cdap_audit.domain import EntryFacts, leaf_bytes
from cdap_audit.merkle import MemoryStore, Node, NodeKey
from cdap_audit.models import MerkleNode, TreeState

NODE = MerkleNode.__table__  # type: ignore[attr-defined]
STATE = TreeState.__table__  # type: ignore[attr-defined]

ENTRY_COLUMNS = (
    "leaf_index",
    "event_id",
    "type",
    "source",
    "time",
    "subject",
    "dossier",
    "actor",
    "organisation_id",
    "profile",
    "decision",
    "reason",
    "motif",
    "sections",
    "client_ip",
    "trace_id",
    "leaf",
)


def entry_row(index: int, facts: EntryFacts, leaf: bytes) -> tuple[Any, ...]:
    """The `entry` row of `facts` at `index`, in `ENTRY_COLUMNS` order (`sections` as JSON text)."""
    return (
        index,
        facts.event_id,
        facts.type,
        facts.source,
        facts.time,
        facts.subject,
        facts.dossier,
        facts.actor,
        facts.organisation_id,
        facts.profile,
        facts.decision,
        facts.reason,
        facts.motif,
        orjson.dumps(facts.sections).decode(),
        facts.client_ip,
        facts.trace_id,
        leaf,
    )


class Frontier:
    """The tree's frontier as of the last batch this process committed, or nothing known yet;
    `on_commit` is called after each such commit."""

    def __init__(self, on_commit: Callable[[], None] | None = None) -> None:
        self._size = -1
        self._store = MemoryStore()
        self._on_commit = on_commit

    def at(self, size: int) -> MemoryStore | None:
        """A copy of the frontier if the committed tree has `size` leaves as expected, else None."""
        return MemoryStore(self._store) if size == self._size else None

    def keep_on_commit(self, session: AsyncSession, size: int, store: MemoryStore) -> None:
        """Remember `store`'s frontier of `size` once (and only if) the session's transaction commits."""
        kept = store.subset(merkle.frontier(size))
        self._size = -1  # until the commit: a rollback leaves nothing to trust

        def committed(_: Session) -> None:
            self._size, self._store = size, kept
            if self._on_commit is not None:
                self._on_commit()

        event.listen(session.sync_session, "after_commit", committed, once=True)


class Appending(NamedTuple):
    """A batch given its leaf indices under the tree lock, its rows and nodes computed, not yet written."""

    first: int
    new_size: int
    store: MemoryStore
    rows: list[tuple[Any, ...]]
    nodes: list[Node]


async def prepare(
    session: AsyncSession, batch: Sequence[EntryFacts], frontier: Frontier | None = None
) -> Appending:
    """Lock the tree and give `batch` the next leaf indices, in order; its entries' rows and the tree's
    new nodes are computed, nothing is written yet (`write`). `frontier`, when given, spares reading
    the tree's frontier."""
    size = await lock_size(session)
    store = frontier.at(size) if frontier is not None else None
    if store is None:
        store = await load_nodes(session, merkle.frontier(size))
    leaves = [leaf_bytes(facts) for facts in batch]
    new_size, nodes = merkle.append_leaves(store, size, [merkle.leaf_hash(leaf) for leaf in leaves])
    rows = [
        entry_row(size + i, facts, leaf) for i, (facts, leaf) in enumerate(zip(batch, leaves, strict=True))
    ]
    return Appending(size, new_size, store, rows, nodes)


async def write(session: AsyncSession, appending: Appending, frontier: Frontier | None = None) -> None:
    """Write a prepared batch's entries, nodes and the new size in the caller's transaction.

    It only uses the session's connection: the caller may compute meanwhile (the rules) as long as it
    sends nothing else on the session until this is done."""
    connection = await (await session.connection()).get_raw_connection()
    driver = connection.driver_connection  # asyncpg: COPY, in the session's open transaction
    assert driver is not None
    await driver.copy_records_to_table("entry", records=appending.rows, columns=ENTRY_COLUMNS)
    await driver.copy_records_to_table(
        "merkle_node",
        records=[(n.level, n.index, n.hash) for n in appending.nodes],
        columns=("level", "idx", "hash"),
    )
    await driver.execute("UPDATE tree_state SET size = $1 WHERE id = 1", appending.new_size)
    if frontier is not None:
        frontier.keep_on_commit(session, appending.new_size, appending.store)


async def append(session: AsyncSession, batch: Sequence[EntryFacts], frontier: Frontier | None = None) -> int:
    """Give `batch` the next leaf indices, in order, and write it in the caller's transaction;
    returns the first index. `frontier`, when given, spares reading the tree's frontier."""
    appending = await prepare(session, batch, frontier)
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


async def load_nodes(session: AsyncSession, keys: Iterable[NodeKey]) -> MemoryStore:
    """The stored nodes among `keys`, in one query."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return MemoryStore()
    rows = await session.execute(
        select(NODE.c.level, NODE.c.idx, NODE.c.hash).where(tuple_(NODE.c.level, NODE.c.idx).in_(wanted))
    )
    return MemoryStore(Node(level, idx, bytes(h)) for level, idx, h in rows.all())


async def root_at(session: AsyncSession, size: int) -> bytes:
    return merkle.root(await load_nodes(session, merkle.frontier(size)), size)


async def inclusion(session: AsyncSession, index: int, size: int) -> list[bytes]:
    store = await load_nodes(session, merkle.inclusion_proof_nodes(index, size))
    return merkle.inclusion_proof(store, index, size)


async def consistency(session: AsyncSession, first: int, second: int) -> list[bytes]:
    store = await load_nodes(session, merkle.consistency_proof_nodes(first, second))
    return merkle.consistency_proof(store, first, second)
