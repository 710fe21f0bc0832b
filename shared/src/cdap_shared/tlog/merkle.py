"""RFC 9162 (Certificate Transparency v2, ex RFC 6962) Merkle tree hashing and proof verification.

What an outside verifier of the audit log needs, and nothing that builds the tree (the audit service's
`cdap_audit.merkle` does that): leaf and node hashes, inclusion and consistency proof checks. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() — the root of the empty tree (RFC 9162 §2.1.1)."""

# RFC 9162 §2.1.1 domain separation prefixes: leaves and interior nodes can never be confused, which is
# what prevents second-preimage attacks that pass an interior node off as a leaf.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _valid_hashes(*values: bytes) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Check an inclusion proof per RFC 9162 §2.1.3.2; never raises, returns ``False`` on bad input."""
    if not 0 <= index < size or not _valid_hashes(leaf_hash, root, *proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False  # proof longer than the path
        if fn & 1 or fn == sn:
            # We are a right child, or the last node of a level with no right sibling: the proof
            # element is on our left, and any levels where we have no sibling are skipped.
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof per RFC 9162 §2.1.4.2; never raises, returns ``False`` on bad input.

    ``first == second`` requires an empty proof and equal roots. ``first == 0`` requires an empty proof
    and ``first_root`` to be the empty-tree root (every tree is an extension of the empty tree).
    """
    if not 0 <= first <= second or not _valid_hashes(first_root, second_root, *proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False

    path = list(proof)
    if first & (first - 1) == 0:
        # The old tree is a complete subtree of the new one, so its root is the proof's implicit start.
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
