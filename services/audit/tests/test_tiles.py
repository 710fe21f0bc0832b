"""The tree kept in tiles gives the same roots and proofs as the node-per-row store of `merkle`
(itself checked against RFC 9162 in test_merkle.py), for sizes on both sides of tile boundaries."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdap_audit import merkle
from cdap_audit.merkle import MemoryStore, MissingNodeError, Node
from cdap_audit.tiles import TILE_WIDTH, TileRow, TileStore, tile_key, tile_keys

BIG = 65_537  # one full level-1 tile (65,536 leaves) plus one


def leaf(i: int) -> bytes:
    return hashlib.sha256(b"\x00" + f"entry-{i}".encode()).digest()


class Database:
    """What the ledger does with PostgreSQL: tiles upserted per batch, fetched per read."""

    def __init__(self) -> None:
        self.tiles: dict[tuple[int, int], bytes] = {}

    def upsert(self, rows: list[TileRow]) -> None:
        for level, index, hashes in rows:
            assert len(hashes) >= len(self.tiles.get((level, index), b"")), "a tile only grows"
            self.tiles[(level, index)] = hashes

    def fetch(self, nodes: list[tuple[int, int]]) -> TileStore:
        return TileStore((*key, self.tiles[key]) for key in tile_keys(nodes) if key in self.tiles)


def grow(database: Database, size: int, hashes: list[bytes], edge: TileStore | None) -> tuple[int, TileStore]:
    """One batch as the ledger appends it: from the kept edge (or the tiles read), rows upserted."""
    store = edge if edge is not None else database.fetch(merkle.frontier(size))
    size, _ = merkle.append_leaves(store, size, hashes)
    database.upsert(store.changed_rows())
    return size, store.edge(merkle.frontier(size))


@pytest.fixture(scope="module")
def big() -> tuple[MemoryStore, Database]:
    """BIG leaves in batches of 1,000, in both stores."""
    nodes, database = MemoryStore(), Database()
    size, edge = 0, None
    for start in range(0, BIG, 1000):
        hashes = [leaf(i) for i in range(start, min(start + 1000, BIG))]
        merkle.append_leaves(nodes, start, hashes)
        size, edge = grow(database, size, hashes, edge if start % 3000 else None)  # reloaded now and then
    return nodes, database


SIZES = [1, 2, 3, 7, 8, 9, 255, 256, 257, 511, 512, 513, 4095, 4096, 4097, 65_535, 65_536, BIG]


@pytest.mark.parametrize("size", SIZES)
def test_roots_and_proofs_from_tiles_are_the_nodes(big: tuple[MemoryStore, Database], size: int) -> None:
    nodes, database = big
    assert merkle.root(database.fetch(merkle.frontier(size)), size) == merkle.root(nodes, size)
    for index in {0, 1, size // 2, size - 2, size - 1, 255, 256, 257} & set(range(size)):
        tiles = database.fetch(merkle.inclusion_proof_nodes(index, size))
        assert merkle.inclusion_proof(tiles, index, size) == merkle.inclusion_proof(nodes, index, size)
    for first in {1, 7, 255, 256, 257, size // 3, size - 1} & set(range(1, size + 1)):
        tiles = database.fetch(merkle.consistency_proof_nodes(first, size))
        assert merkle.consistency_proof(tiles, first, size) == merkle.consistency_proof(nodes, first, size)


def test_a_write_is_a_few_tiles_not_a_row_per_node(big: tuple[MemoryStore, Database]) -> None:
    _, database = big
    # 65,537 leaves: 257 leaf tiles, one level-1 tile of 256 hashes, one level-2 tile of one.
    assert len(database.tiles) == 257 + 1 + 1
    assert len(database.tiles[(0, 256)]) == 32 and len(database.tiles[(1, 0)]) == TILE_WIDTH * 32
    assert database.tiles[(2, 0)] == merkle.root(big[0], 65_536)
    fresh = Database()
    _, edge = grow(fresh, 0, [leaf(i) for i in range(1000)], None)
    _, nodes = merkle.append_leaves(edge, 1000, [leaf(i) for i in range(1000, 1600)])
    # The batch completes leaf tiles 3 to 5, starts tile 6 and adds their 3 level-8 nodes to tile (1, 0):
    # 5 rows, where a row per node made 1,203.
    assert len(nodes) == 1203
    assert sorted(row[:2] for row in edge.changed_rows()) == [(0, 3), (0, 4), (0, 5), (0, 6), (1, 0)]


@settings(max_examples=30, deadline=None)
@given(batches=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=8), data=st.data())
def test_random_batches_give_the_roots_and_proofs_of_the_nodes(
    batches: list[int], data: st.DataObject
) -> None:
    nodes, database = MemoryStore(), Database()
    size, edge = 0, None
    for n in batches:
        hashes = [leaf(size + i) for i in range(n)]
        merkle.append_leaves(nodes, size, hashes)
        size, edge = grow(database, size, hashes, edge if data.draw(st.booleans()) else None)
    for n in data.draw(st.lists(st.integers(0, size), min_size=1, max_size=5)):
        assert merkle.root(database.fetch(merkle.frontier(n)), n) == merkle.root(nodes, n)
    if size:
        n = data.draw(st.integers(1, size))
        m = data.draw(st.integers(0, n - 1))
        tiles = database.fetch(merkle.inclusion_proof_nodes(m, n))
        assert merkle.inclusion_proof(tiles, m, n) == merkle.inclusion_proof(nodes, m, n)
        first = data.draw(st.integers(1, n))
        tiles = database.fetch(merkle.consistency_proof_nodes(first, n))
        assert merkle.consistency_proof(tiles, first, n) == merkle.consistency_proof(nodes, first, n)


def test_a_missing_or_short_tile_is_a_missing_node() -> None:
    database = Database()
    grow(database, 0, [leaf(i) for i in range(300)], None)
    del database.tiles[(0, 1)]
    with pytest.raises(MissingNodeError):
        merkle.root(database.fetch(merkle.frontier(300)), 300)
    assert merkle.root(database.fetch(merkle.frontier(256)), 256)  # the full tile still proves
    with pytest.raises(MissingNodeError):
        merkle.inclusion_proof(database.fetch(merkle.inclusion_proof_nodes(3, 257)), 3, 257)


def test_a_node_that_does_not_extend_its_tile_is_refused() -> None:
    store = TileStore()
    merkle.append_leaves(store, 0, [leaf(0), leaf(1)])
    store.put_many([Node(0, 1, leaf(1)), Node(1, 0, b"derived levels are not stored")])  # repeats: fine
    with pytest.raises(ValueError, match="does not extend"):
        store.put_many([Node(0, 1, leaf(7))])
    with pytest.raises(ValueError, match="does not extend"):
        store.put_many([Node(0, 5, leaf(5))])  # a gap
    with pytest.raises(ValueError, match="already stored"):
        merkle.append_leaves(store, 1, [leaf(9)])  # a stale size


def test_tile_keys() -> None:
    assert tile_key(0, 255) == (0, 0) and tile_key(0, 256) == (0, 1)
    assert tile_key(7, 1) == (0, 0) and tile_key(7, 2) == (0, 1)  # a level-7 node: half a leaf tile
    assert tile_key(8, 0) == (1, 0) and tile_key(15, 1) == (1, 0) and tile_key(16, 256) == (2, 1)
    assert tile_keys([(0, 1), (3, 0), (0, 300)]) == [(0, 0), (0, 1)]
