"""RFC 9162 (Certificate Transparency v2, ex RFC 6962) Merkle tree: storing its nodes, roots and proofs.

The tree is kept as *complete subtree* hashes keyed by ``(level, index)``: the node at ``(level, index)``
covers leaves ``[index * 2**level, (index + 1) * 2**level)``. Such a node is immutable once all of its
leaves exist, so it can be written once to a database and never updated. Every root and every proof for
any tree size can be computed from those nodes alone, so retention may purge the log entries themselves
without losing the ability to prove anything about the log.

Everything here is pure: the store is only reached through the small :class:`MerkleStore` protocol. An
async/database caller can ask which nodes an operation needs (:func:`frontier`,
:func:`inclusion_proof_nodes`, :func:`consistency_proof_nodes`), fetch them in one query into a store
(the log's is `cdap_audit.tiles.TileStore`), and then run the same functions on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

# The hashing and the proof checks are the verifier's (cdap_shared.tlog.merkle), shared with whoever checks
# this log from outside (the portal, `cdap audit verify`, `cdap demo`); this module builds and proves.
from cdap_shared.tlog.merkle import EMPTY_ROOT as EMPTY_ROOT
from cdap_shared.tlog.merkle import HASH_SIZE as HASH_SIZE
from cdap_shared.tlog.merkle import leaf_hash as leaf_hash
from cdap_shared.tlog.merkle import node_hash as node_hash
from cdap_shared.tlog.merkle import verify_consistency as verify_consistency
from cdap_shared.tlog.merkle import verify_inclusion as verify_inclusion

NodeKey = tuple[int, int]
"""``(level, index)`` of a complete subtree."""


def _split(n: int) -> int:
    """Return RFC 9162's ``k``: the largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_perfect(start: int, end: int) -> bool:
    """Whether ``[start, end)`` is exactly one stored complete subtree (power-of-two size, aligned)."""
    n = end - start
    return n > 0 and n & (n - 1) == 0 and start % n == 0


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH(D[n]) of a full list of leaf hashes, per RFC 9162 §2.1.1.

    This recomputes everything; it exists for small trees, tests and independent audits. The log itself
    uses :func:`append_leaves` and :func:`root`.
    """

    def mth(start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return leaf_hashes[start]
        k = _split(n)
        return node_hash(mth(start, start + k), mth(start + k, end))

    if not leaf_hashes:
        return EMPTY_ROOT
    return mth(0, len(leaf_hashes))


class Node(NamedTuple):
    """A complete subtree hash, covering leaves ``[index * 2**level, (index + 1) * 2**level)``.

    A named tuple rather than a frozen dataclass: a batch makes two per entry, and building these is
    several times cheaper."""

    level: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing here calls
    hash: bytes


class MerkleStore(Protocol):
    """Where complete subtree hashes live. Implementations must treat nodes as write-once."""

    def get(self, level: int, index: int) -> bytes | None:
        """Return the hash of node ``(level, index)``, or ``None`` if it is not stored."""
        ...

    def put_many(self, nodes: Iterable[Node]) -> None:
        """Store the given nodes (new nodes only; a node never changes once written)."""
        ...


class MemoryStore:
    """In-memory :class:`MerkleStore`: for tests, and as a cache of nodes prefetched from a database."""

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self._nodes: dict[NodeKey, bytes] = {}
        self.put_many(nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        """Iterate over all stored nodes (e.g. to flush them elsewhere)."""
        return (Node(level, index, h) for (level, index), h in self._nodes.items())

    def get(self, level: int, index: int) -> bytes | None:
        """Return the hash of node ``(level, index)``, or ``None`` if it is not stored."""
        return self._nodes.get((level, index))

    def put_many(self, nodes: Iterable[Node]) -> None:
        """Store nodes; rewriting a node with a *different* hash raises ``ValueError``.

        Complete subtrees are immutable, so a conflicting write means history is being rewritten (or the
        caller appended at a stale size); refusing it is the in-memory analogue of a unique constraint.
        """
        stored = self._nodes
        for level, index, hash_ in nodes:  # a batch puts thousands: one lookup each
            if stored.setdefault((level, index), hash_) != hash_:
                raise ValueError(f"node {(level, index)} already stored with a different hash")


class MissingNodeError(ValueError):
    """A node needed for a computation is not in the store (tree smaller than asked, or store incomplete)."""


def _get(store: MerkleStore, level: int, index: int) -> bytes:
    value = store.get(level, index)
    if value is None:
        first, last = index << level, (index + 1) << level
        raise MissingNodeError(
            f"node (level={level}, index={index}) covering leaves [{first}, {last}) is not stored: "
            "the requested size exceeds the tree, or the store is incomplete"
        )
    return value


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def frontier(size: int) -> list[NodeKey]:
    """Return the maximal complete subtrees of ``[0, size)``, largest (leftmost) first.

    They are the binary decomposition of ``size``: one node per set bit. They are all that :func:`root`
    needs for that size, and all that :func:`append_leaves` needs to extend a tree of that size.
    """
    if size < 0:
        raise ValueError(f"tree size must be >= 0, got {size}")
    keys: list[NodeKey] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def append_leaves(store: MerkleStore, size: int, new_leaf_hashes: Iterable[bytes]) -> tuple[int, list[Node]]:
    """Append leaf hashes to a tree of ``size`` leaves; return ``(new_size, newly_completed_nodes)``.

    The returned nodes (the new leaves at level 0 plus every subtree they complete) are also written to
    ``store`` with one ``put_many`` call. A database-backed caller can instead pass a :class:`MemoryStore`
    prefetched with :func:`frontier` ``(size)`` and bulk-insert the returned nodes in its own transaction.
    Cost is O(log n) per leaf; nothing is ever recomputed from scratch.
    """
    leaves = list(new_leaf_hashes)
    for i, h in enumerate(leaves):
        _check_hash(h, f"leaf hash #{i}")
    # Only the frontier of the current tree can ever be a left sibling of a new node; load it up front
    # (this also proves the store really holds `size` leaves).
    known: dict[NodeKey, bytes] = {key: _get(store, *key) for key in frontier(size)}
    if leaves and store.get(0, size) is not None:
        # Best-effort guard against a stale `size`: appending there would try to rewrite history.
        raise ValueError(f"leaf {size} is already stored; the tree is larger than size={size}")

    new_nodes: list[Node] = []
    for h in leaves:
        level, index = 0, size
        known[(level, index)] = h
        new_nodes.append(Node(level, index, h))
        # A node with an odd index is a right child, so its parent has just become complete.
        while index & 1:
            h = node_hash(known[(level, index - 1)], h)
            level, index = level + 1, index >> 1
            known[(level, index)] = h
            new_nodes.append(Node(level, index, h))
        size += 1

    if new_nodes:
        store.put_many(new_nodes)
    return size, new_nodes


def root(store: MerkleStore, size: int) -> bytes:
    """Return the tree head MTH(D[0:size]) for any ``size`` the store covers, in O(log n) lookups.

    ``[0, size)`` splits into the maximal complete subtrees s1, s2, ..., sm of :func:`frontier`, largest
    first. RFC 9162 always splits off the largest power of two on the *left*, so the root is the right
    fold ``hash(s1, hash(s2, ... hash(s(m-1), sm)))`` — not a left-to-right fold.
    """
    if size == 0:
        return EMPTY_ROOT
    hashes = [_get(store, *key) for key in frontier(size)]
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def subtree_hash(store: MerkleStore, start: int, end: int) -> bytes:
    """Return MTH(D[start:end]) for an arbitrary leaf range, using stored complete subtrees.

    Follows the RFC 9162 split recursively and stops as soon as a range is itself a stored complete
    subtree; for the ranges proofs ask for that takes O(log n) lookups.
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid leaf range [{start}, {end})")
    if start == end:
        return EMPTY_ROOT
    if _is_perfect(start, end):
        n = end - start
        return _get(store, n.bit_length() - 1, start // n)
    k = _split(end - start)
    return node_hash(subtree_hash(store, start, start + k), subtree_hash(store, start + k, end))


def inclusion_proof(store: MerkleStore, index: int, size: int) -> list[bytes]:
    """Return the audit path PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf-side first.

    Raises ``ValueError`` unless ``0 <= index < size`` (and :class:`MissingNodeError`, also a
    ``ValueError``, if ``size`` exceeds what the store holds).
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is out of range for tree size {size}")
    # Walk from the root down to the leaf; RFC 9162 lists the path the other way round.
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(store, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(store, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(store: MerkleStore, first: int, second: int) -> list[bytes]:
    """Return PROOF(first, D[0:second]) of RFC 9162 §2.1.4.1.

    The proof is empty when ``first == second`` or ``first == 0`` (every tree extends the empty tree).
    Raises ``ValueError`` unless ``0 <= first <= second``.
    """
    if not 0 <= first <= second:
        raise ValueError(f"consistency proof needs 0 <= first <= second, got first={first}, second={second}")
    if first in (0, second):
        return []

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        # SUBPROOF(m, D[start:end], b): `complete` is b, true while D[start:start+m] is the old tree's
        # entire left edge, whose root the verifier already has and so need not be sent.
        n = end - start
        if m == n:
            return [] if complete else [subtree_hash(store, start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), subtree_hash(store, start + k, end)]
        return [*subproof(m - k, start + k, end, False), subtree_hash(store, start, start + k)]

    return subproof(first, 0, second, True)


class _RecordingStore:
    """A store that answers every lookup with a dummy hash and records which nodes were asked for."""

    def __init__(self) -> None:
        self.keys: dict[NodeKey, None] = {}  # a dict keeps first-use order and drops duplicates

    def get(self, level: int, index: int) -> bytes | None:
        self.keys[(level, index)] = None
        return bytes(HASH_SIZE)

    def put_many(self, nodes: Iterable[Node]) -> None:
        raise AssertionError("read-only")


def inclusion_proof_nodes(index: int, size: int) -> list[NodeKey]:
    """Return the ``(level, index)`` keys :func:`inclusion_proof` will read, for batch prefetching."""
    recorder = _RecordingStore()
    inclusion_proof(recorder, index, size)
    return list(recorder.keys)


def consistency_proof_nodes(first: int, second: int) -> list[NodeKey]:
    """Return the ``(level, index)`` keys :func:`consistency_proof` will read, for batch prefetching."""
    recorder = _RecordingStore()
    consistency_proof(recorder, first, second)
    return list(recorder.keys)
