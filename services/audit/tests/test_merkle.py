"""Tests for cdap_audit.merkle against an independent transcription of RFC 9162 §2.1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdap_audit import merkle
from cdap_audit.merkle import MemoryStore, MissingNodeError, Node

# ---- independent reference: RFC 9162 §2.1 written over a plain list of entries ---------------------------
# Deliberately shares no code with the module under test (not even leaf_hash/node_hash).


def ref_leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def ref_k(n: int) -> int:
    """Largest power of two k with k < n <= 2k, found by plain doubling."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) over *entries* (not leaf hashes)."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return ref_leaf(d[0])
    k = ref_k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_sides(m: int, n: int) -> list[str]:
    """Side of each sibling along PATH(m, D[n]), leaf first: all the verifier's hashing depends on."""
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_sides(m, k), "right"]
    return [*ref_sides(m - k, n - k), "left"]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


# ---- helpers -----------------------------------------------------------------------------------------------


def entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


def build(n: int) -> tuple[MemoryStore, list[bytes]]:
    """A store grown one leaf at a time (the most incremental path)."""
    store = MemoryStore()
    data = entries(n)
    size = 0
    for e in data:
        size, _ = merkle.append_leaves(store, size, [merkle.leaf_hash(e)])
    return store, data


def flip(h: bytes, i: int = 0) -> bytes:
    return h[:i] + bytes([h[i] ^ 1]) + h[i + 1 :]


MAX = 70


@pytest.fixture(scope="module")
def tree() -> tuple[MemoryStore, list[bytes]]:
    return build(MAX)


# ---- hashing and known answers ---------------------------------------------------------------------------


def test_empty_root() -> None:
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.EMPTY_ROOT.hex() == expected
    assert merkle.root_from_leaves([]).hex() == expected
    assert merkle.root(MemoryStore(), 0).hex() == expected


def test_rfc6962_eight_leaf_vector() -> None:
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    hashes = [merkle.leaf_hash(e) for e in leaves]
    assert merkle.root_from_leaves(hashes).hex() == expected
    store = MemoryStore()
    size, _ = merkle.append_leaves(store, 0, hashes)
    assert size == 8
    assert merkle.root(store, 8).hex() == expected
    assert ref_mth(leaves).hex() == expected


def test_leaf_and_node_domain_separation() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    a, b = b"a" * 32, b"b" * 32
    assert merkle.node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert merkle.node_hash(a, b) != merkle.node_hash(b, a)


# ---- the store against the reference, exhaustively for small trees ---------------------------------------


def test_roots_match_reference(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, data = tree
    for n in range(MAX + 1):
        expected = ref_mth(data[:n])
        assert merkle.root(store, n) == expected, n
        assert merkle.subtree_hash(store, 0, n) == expected, n
        assert merkle.root_from_leaves([ref_leaf(e) for e in data[:n]]) == expected, n


def test_subtree_hash_arbitrary_ranges(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, data = tree
    for start in range(0, 40):
        for end in range(start, 45):
            assert merkle.subtree_hash(store, start, end) == ref_mth(data[start:end]), (start, end)


def test_inclusion_proofs_match_reference_and_verify(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, data = tree
    stored = {(node.level, node.index) for node in store}
    for n in range(1, MAX + 1):
        root = ref_mth(data[:n])
        for m in range(n):
            proof = merkle.inclusion_proof(store, m, n)
            assert proof == ref_path(m, data[:n]), (m, n)
            assert merkle.verify_inclusion(ref_leaf(data[m]), m, n, proof, root), (m, n)
            assert set(merkle.inclusion_proof_nodes(m, n)) <= stored


def test_consistency_proofs_match_reference_and_verify(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, data = tree
    roots = [ref_mth(data[:n]) for n in range(MAX + 1)]
    for n in range(1, MAX + 1):
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(store, m, n)
            expected = [] if m == n else ref_proof(m, data[:n])
            assert proof == expected, (m, n)
            assert merkle.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)


# ---- verifiers reject tampering --------------------------------------------------------------------------


def test_verify_inclusion_rejects_tampering(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, data = tree
    for n in (2, 3, 5, 8, 13, 32, 33, 70):
        root = merkle.root(store, n)
        for m in range(n):
            leaf = ref_leaf(data[m])
            proof = merkle.inclusion_proof(store, m, n)
            assert merkle.verify_inclusion(leaf, m, n, proof, root)
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = flip(bad[i], i % 32)
                assert not merkle.verify_inclusion(leaf, m, n, bad, root), (m, n, i)
            assert not merkle.verify_inclusion(flip(leaf), m, n, proof, root)
            assert not merkle.verify_inclusion(ref_leaf(b"changed"), m, n, proof, root)
            assert not merkle.verify_inclusion(leaf, m, n, proof, flip(root, 31))
            assert not merkle.verify_inclusion(leaf, (m + 1) % n, n, proof, root)
            assert not merkle.verify_inclusion(leaf, m, n, proof[:-1], root)
            assert not merkle.verify_inclusion(leaf, m, n, [*proof, root], root)
            # The root hash does not encode the tree size (the signed checkpoint does): a wrong size is
            # caught exactly when it changes the shape of the audit path, e.g. (0, 3) and (0, 4) share it.
            for wrong in {n - 1, n + 1, 2 * n} - {n}:
                if m < wrong:
                    accepted = merkle.verify_inclusion(leaf, m, wrong, proof, root)
                    assert accepted == (ref_sides(m, wrong) == ref_sides(m, n)), (m, n, wrong)


def test_verify_inclusion_invalid_input_returns_false() -> None:
    h = ref_leaf(b"a")
    assert merkle.verify_inclusion(h, 0, 1, [], h)
    assert not merkle.verify_inclusion(h, 1, 1, [], h)
    assert not merkle.verify_inclusion(h, -1, 1, [], h)
    assert not merkle.verify_inclusion(h, 0, 0, [], h)
    assert not merkle.verify_inclusion(h[:31], 0, 1, [], h[:31])
    assert not merkle.verify_inclusion(h, 0, 2, [b"short"], h)


def test_verify_consistency_rejects_tampering(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, _ = tree
    pairs = [(m, n) for n in (2, 3, 7, 8, 9, 16, 17, 33, 70) for m in range(1, n)]
    for m, n in pairs:
        r1, r2 = merkle.root(store, m), merkle.root(store, n)
        proof = merkle.consistency_proof(store, m, n)
        assert merkle.verify_consistency(m, n, r1, r2, proof)
        for i in range(len(proof)):
            bad = list(proof)
            bad[i] = flip(bad[i], i % 32)
            assert not merkle.verify_consistency(m, n, r1, r2, bad), (m, n, i)
        assert not merkle.verify_consistency(m, n, r2, r1, proof), (m, n)
        assert not merkle.verify_consistency(m, n, flip(r1), r2, proof)
        assert not merkle.verify_consistency(m, n, r1, flip(r2), proof)
        assert not merkle.verify_consistency(n, m, r2, r1, proof)
        assert not merkle.verify_consistency(m, n, r1, r2, [])
        assert not merkle.verify_consistency(m, n, r1, r2, proof[:-1])
        assert not merkle.verify_consistency(m, n, r1, r2, [*proof, r1])
        # As for inclusion, sizes are bound by the checkpoint rather than the hashes; a wrong size is
        # always caught when it changes the proof's length (and usually otherwise, but not always).
        for m2, n2 in ((m, n + 1), (m, 2 * n), (m - 1, n), (m + 1, n)):
            if 0 < m2 < n2 and len(ref_proof(m2, entries(n2))) != len(proof):
                assert not merkle.verify_consistency(m2, n2, r1, r2, proof), (m, n, m2, n2)


def test_verify_consistency_edge_cases() -> None:
    a, b = ref_leaf(b"a"), ref_leaf(b"b")
    assert merkle.verify_consistency(5, 5, a, a, [])
    assert not merkle.verify_consistency(5, 5, a, b, [])
    assert not merkle.verify_consistency(5, 5, a, a, [a])
    assert merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, b, [])
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(0, 7, a, b, [])
    assert not merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, b, [a])
    assert not merkle.verify_consistency(-1, 7, a, b, [a])
    assert not merkle.verify_consistency(3, 2, a, b, [a])
    assert not merkle.verify_consistency(1, 2, a[:5], b, [a])


# ---- proof generation errors -----------------------------------------------------------------------------


def test_out_of_range_arguments_raise(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, _ = tree
    for index, size in ((0, 0), (5, 5), (-1, 3)):
        with pytest.raises(ValueError, match="out of range"):
            merkle.inclusion_proof(store, index, size)
    with pytest.raises(ValueError, match="first <= second"):
        merkle.consistency_proof(store, 6, 5)
    with pytest.raises(ValueError, match="first <= second"):
        merkle.consistency_proof(store, -1, 5)
    with pytest.raises(ValueError, match="invalid leaf range"):
        merkle.subtree_hash(store, 5, 4)
    # Sizes beyond the tree surface as MissingNodeError, which is a ValueError.
    with pytest.raises(MissingNodeError):
        merkle.root(store, MAX + 1)
    with pytest.raises(ValueError, match="not stored"):
        merkle.inclusion_proof(store, 0, MAX + 5)
    with pytest.raises(ValueError, match="not stored"):
        merkle.consistency_proof(store, 3, MAX + 5)
    assert merkle.consistency_proof(store, 0, 9) == []
    assert merkle.consistency_proof(store, 9, 9) == []


# ---- incremental appends, persistence, retention ---------------------------------------------------------


def test_append_returns_exactly_the_completed_nodes() -> None:
    store = MemoryStore()
    hashes = [ref_leaf(e) for e in entries(8)]
    size, nodes = merkle.append_leaves(store, 0, hashes[:3])
    assert size == 3
    assert [(n.level, n.index) for n in nodes] == [(0, 0), (0, 1), (1, 0), (0, 2)]
    size, nodes = merkle.append_leaves(store, 3, hashes[3:4])
    assert [(n.level, n.index) for n in nodes] == [(0, 3), (1, 1), (2, 0)]
    assert nodes[-1].hash == ref_mth(entries(4))
    size, nodes = merkle.append_leaves(store, 4, [])
    assert (size, nodes) == (4, [])


def test_append_rejects_bad_input() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="32 bytes"):
        merkle.append_leaves(store, 0, [b"short"])
    merkle.append_leaves(store, 0, [ref_leaf(b"a"), ref_leaf(b"b")])
    with pytest.raises(MissingNodeError):
        merkle.append_leaves(store, 3, [ref_leaf(b"c")])  # size larger than the tree
    with pytest.raises(ValueError, match="already stored"):
        merkle.append_leaves(store, 1, [ref_leaf(b"x")])  # stale size would rewrite history
    with pytest.raises(ValueError, match="different hash"):
        store.put_many([Node(0, 0, ref_leaf(b"z"))])


def test_proofs_work_from_a_prefetched_cache(tree: tuple[MemoryStore, list[bytes]]) -> None:
    """A database caller fetches only the keys it is told about and runs the same code on them."""
    store, data = tree
    for m, n in ((0, 1), (5, 13), (31, 32), (40, 70), (69, 70)):
        keys = merkle.inclusion_proof_nodes(m, n)
        cache = MemoryStore(Node(lv, ix, store.get(lv, ix) or b"") for lv, ix in keys)
        assert merkle.inclusion_proof(cache, m, n) == ref_path(m, data[:n])
    for m, n in ((1, 2), (3, 7), (8, 9), (13, 70), (64, 70)):
        keys = merkle.consistency_proof_nodes(m, n)
        cache = MemoryStore(Node(lv, ix, store.get(lv, ix) or b"") for lv, ix in keys)
        assert merkle.consistency_proof(cache, m, n) == ref_proof(m, data[:n])
    for n in (1, 6, 64, 70):
        cache = MemoryStore(Node(lv, ix, store.get(lv, ix) or b"") for lv, ix in merkle.frontier(n))
        assert merkle.root(cache, n) == ref_mth(data[:n])
        # ...and the frontier alone is enough to keep appending.
        size, _ = merkle.append_leaves(cache, n, [ref_leaf(b"next")])
        assert merkle.root(cache, size) == ref_mth([*data[:n], b"next"])


def test_frontier_is_binary_decomposition() -> None:
    assert merkle.frontier(0) == []
    assert merkle.frontier(1) == [(0, 0)]
    assert merkle.frontier(6) == [(2, 0), (1, 2)]
    assert merkle.frontier(7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.frontier(64) == [(6, 0)]
    with pytest.raises(ValueError):
        merkle.frontier(-1)


def test_proofs_survive_purging_old_leaves(tree: tuple[MemoryStore, list[bytes]]) -> None:
    """Retention: with old leaf-level nodes gone, proofs for retained leaves still only need stored nodes."""
    store, data = tree
    n = MAX
    # Purge every level-0 and level-1 node of the first 32 leaves (their entries were deleted).
    purged = MemoryStore(node for node in store if not (node.level <= 1 and node.index << node.level < 32))
    assert merkle.frontier(32)[0] in {(nd.level, nd.index) for nd in purged}
    assert merkle.root(purged, n) == ref_mth(data)
    for m in range(32, n):
        assert merkle.inclusion_proof(purged, m, n) == ref_path(m, data)
    for m in (32, 33, 40, 64):
        assert merkle.consistency_proof(purged, m, n) == ref_proof(m, data)


# ---- randomised: random sizes grown in random batches ----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=20).filter(
        lambda b: sum(b) <= 300
    ),
    data=st.data(),
)
def test_random_batches_match_reference(batches: list[int], data: st.DataObject) -> None:
    store = MemoryStore()
    all_entries: list[bytes] = []
    size = 0
    for batch in batches:
        new = [f"r{len(all_entries) + i}".encode() for i in range(batch)]
        size, nodes = merkle.append_leaves(store, size, [ref_leaf(e) for e in new])
        all_entries += new
        assert size == len(all_entries)
        assert all(store.get(nd.level, nd.index) == nd.hash for nd in nodes)
        assert merkle.root(store, size) == ref_mth(all_entries)
    if size == 0:
        return
    # Roots of every historical size remain available.
    for n in data.draw(st.lists(st.integers(0, size), min_size=1, max_size=10)):
        assert merkle.root(store, n) == ref_mth(all_entries[:n])
    n = data.draw(st.integers(1, size))
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(store, m, n)
    assert proof == ref_path(m, all_entries[:n])
    assert merkle.verify_inclusion(ref_leaf(all_entries[m]), m, n, proof, ref_mth(all_entries[:n]))
    first = data.draw(st.integers(1, n))
    cproof = merkle.consistency_proof(store, first, n)
    assert cproof == ([] if first == n else ref_proof(first, all_entries[:n]))
    assert merkle.verify_consistency(first, n, ref_mth(all_entries[:first]), ref_mth(all_entries[:n]), cproof)
