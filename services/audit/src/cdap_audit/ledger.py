"""The log itself: append entries to the Merkle tree inside the consumer's transaction, read proofs.

Appending
    The first append of a transaction locks the one `tree_state` row (`FOR UPDATE`): replicas
    consuming other partitions wait there, so leaf indices are gapless and never assigned twice. It
    loads the tree's frontier (at most one node per level) into a `MemoryStore`; each entry is then
    hashed and its newly completed subtree nodes computed in memory, O(log n), nothing recomputed.
    Rows are written in bulk just before the transaction commits (a `before_commit` hook), together
    with the new size: one INSERT for the entries, one for the nodes, one UPDATE, per batch. The
    consumer's handler is called once per event and cannot know which call is the last; the hook
    is how "flush at the end of the batch" is done without changing the shared consumer. If the
    transaction rolls back, the pending rows go with it (they are keyed by transaction).

Reading
    A root or proof needs a few nodes (`merkle.frontier`, `*_proof_nodes`): they are fetched in one
    query into a `MemoryStore` and the pure functions of `merkle` run on it. Only committed sizes are
    ever served, and every node of a committed size was committed in the same transaction.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from cdap_audit import merkle
from cdap_audit.domain import EntryFacts, leaf_bytes
from cdap_audit.merkle import MemoryStore, Node, NodeKey
from cdap_audit.models import Entry, MerkleNode, TreeState

_PENDING = "cdap_audit_pending_append"
_HOOKED = "cdap_audit_flush_hooked"

ENTRY = Entry.__table__  # type: ignore[attr-defined]
NODE = MerkleNode.__table__  # type: ignore[attr-defined]
STATE = TreeState.__table__  # type: ignore[attr-defined]


@dataclass
class _Pending:
    """What this transaction appended so far and has not written yet."""

    transaction: weakref.ref[SessionTransaction]
    size: int
    store: MemoryStore
    rows: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)


def entry_row(index: int, facts: EntryFacts, leaf: bytes) -> dict[str, Any]:
    return {
        "leaf_index": index,
        "event_id": facts.event_id,
        "type": facts.type,
        "source": facts.source,
        "time": facts.time,
        "subject": facts.subject,
        "dossier": facts.dossier,
        "actor": facts.actor,
        "organisation_id": facts.organisation_id,
        "profile": facts.profile,
        "decision": facts.decision,
        "reason": facts.reason,
        "motif": facts.motif,
        "sections": list(facts.sections),
        "client_ip": facts.client_ip,
        "trace_id": facts.trace_id,
        "leaf": leaf,
    }


async def append(session: AsyncSession, facts: EntryFacts) -> int:
    """Give `facts` the next leaf index; written when the caller's transaction commits."""
    pending = await _pending(session)
    leaf = leaf_bytes(facts)
    index = pending.size
    pending.size, nodes = merkle.append_leaves(pending.store, index, [merkle.leaf_hash(leaf)])
    pending.nodes.extend(nodes)
    pending.rows.append(entry_row(index, facts, leaf))
    return index


async def _pending(session: AsyncSession) -> _Pending:
    transaction = session.sync_session.get_transaction()
    if transaction is None:
        raise RuntimeError("ledger.append must run inside a transaction")
    current: _Pending | None = session.info.get(_PENDING)
    if current is not None and current.transaction() is transaction:
        return current
    size = await lock_size(session)
    pending = _Pending(weakref.ref(transaction), size, await load_nodes(session, merkle.frontier(size)))
    session.info[_PENDING] = pending
    if not session.info.get(_HOOKED):
        event.listen(session.sync_session, "before_commit", _flush)
        session.info[_HOOKED] = True
    return pending


def _flush(session: Session) -> None:
    """`before_commit` hook: bulk-write what was appended (runs in SQLAlchemy's async greenlet)."""
    pending: _Pending | None = session.info.pop(_PENDING, None)
    if pending is None or not pending.rows or pending.transaction() is not session.get_transaction():
        return
    session.execute(insert(ENTRY), pending.rows)
    session.execute(insert(NODE), [{"level": n.level, "idx": n.index, "hash": n.hash} for n in pending.nodes])
    session.execute(update(STATE).where(STATE.c.id == 1).values(size=pending.size))


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
