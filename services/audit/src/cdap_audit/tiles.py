"""The Merkle tree stored in tiles (C2SP tlog-tiles' layout): 256 hashes of one level per row. Pure.

A tile at tile level ``L`` and index ``N`` holds the hashes of the tree's level-``8L`` nodes
``256N .. 256N + w - 1``, concatenated (32 bytes each); ``w`` is its width, 256 once full. Only every
eighth level is stored: a node at level ``8L + r`` (``r < 8``) is the root of ``2**r`` consecutive hashes
of one tile, recomputed when read (at most 127 hashings). Appending n leaves thus touches about n/256
tiles plus the right-most, partial tile of each tile level, where one row per node made 2n rows.

A full tile never changes; a partial tile only grows (its hashes are complete subtrees too), so a
tile wider than a tree size needs still serves that size.
"""

from __future__ import annotations

from collections.abc import Iterable

from cdap_audit.merkle import HASH_SIZE, Node, NodeKey, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT

TileKey = tuple[int, int]
"""``(tile level, tile index)``."""

TileRow = tuple[int, int, bytes]
"""A tile as stored: ``(tile level, tile index, its hashes concatenated)``."""


def tile_key(level: int, index: int) -> TileKey:
    """The tile that node ``(level, index)`` is stored in or computed from."""
    tile_level, rise = divmod(level, TILE_HEIGHT)
    return tile_level, (index << rise) >> TILE_HEIGHT


def tile_keys(nodes: Iterable[NodeKey]) -> list[TileKey]:
    """The tiles holding `nodes` (each once, in first-use order): what to fetch to read them."""
    return list(dict.fromkeys(tile_key(level, index) for level, index in nodes))


class TileStore:
    """A :class:`~cdap_audit.merkle.MerkleStore` over tiles: the tiles fetched for a read, or the
    right-most tiles a batch appends to. It notes which tiles `put_many` changed (`changed_rows`)."""

    def __init__(self, rows: Iterable[TileRow] = ()) -> None:
        self._tiles: dict[TileKey, list[bytes]] = {}
        self._changed: dict[TileKey, None] = {}
        for level, index, hashes in rows:
            self._tiles[(level, index)] = [
                hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)
            ]

    def get(self, level: int, index: int) -> bytes | None:
        """The hash of node ``(level, index)``, or None if its tile is missing or not wide enough."""
        tile_level, rise = divmod(level, TILE_HEIGHT)
        first = index << rise
        hashes = self._tiles.get((tile_level, first >> TILE_HEIGHT))
        start = first & (TILE_WIDTH - 1)
        end = start + (1 << rise)
        if hashes is None or len(hashes) < end:
            return None
        span = hashes[start:end]
        while len(span) > 1:
            span = [node_hash(span[i], span[i + 1]) for i in range(0, len(span), 2)]
        return span[0]

    def put_many(self, nodes: Iterable[Node]) -> None:
        """Store the nodes of the tile levels (the others are recomputed from them when read).

        A node must extend its tile (or repeat what it holds): a different hash, or a gap, means history
        is being rewritten or the caller appended at a stale size, and raises ``ValueError``."""
        tiles, changed = self._tiles, self._changed
        for level, index, hash_ in nodes:
            if level % TILE_HEIGHT:
                continue
            key = (level // TILE_HEIGHT, index >> TILE_HEIGHT)
            hashes = tiles.setdefault(key, [])
            offset = index & (TILE_WIDTH - 1)
            if offset == len(hashes):
                hashes.append(hash_)
                changed[key] = None
            elif offset > len(hashes) or hashes[offset] != hash_:
                raise ValueError(f"node {(level, index)} does not extend tile {key} of {len(hashes)} hashes")

    def changed_rows(self) -> list[TileRow]:
        """The tiles `put_many` extended, whole, as rows to upsert."""
        return [(level, index, b"".join(self._tiles[(level, index)])) for level, index in self._changed]

    def edge(self, nodes: Iterable[NodeKey]) -> TileStore:
        """A new store with copies of the tiles holding `nodes` (for an append: those of the frontier),
        nothing marked as changed."""
        kept = TileStore()
        for key in tile_keys(nodes):
            kept._tiles[key] = list(self._tiles[key])
        return kept
