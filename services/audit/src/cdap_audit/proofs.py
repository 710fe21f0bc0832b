"""Proofs over the committed log (RFC 9162 §2.1.3 and §2.1.4), for the sizes a caller may ask for.

A proof is asked of the tree as committed: sizes beyond it are the caller's mistake
(`InvalidProofRequest`), while a node missing for a committed size is damage (`LogDamaged`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import ledger
from cdap_audit.domain import InvalidProofRequest, LogDamaged
from cdap_audit.merkle import MissingNodeError


@contextmanager
def _intact() -> Iterator[None]:
    try:
        yield
    except MissingNodeError as exc:
        raise LogDamaged("A Merkle node the proof needs is missing from the store.") from exc


async def inclusion(session: AsyncSession, index: int, tree_size: int) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `tree_size` leaves."""
    size = await ledger.committed_size(session)
    if not index < tree_size <= size:
        raise InvalidProofRequest(f"Need index < tree_size <= {size} (the log's size).")
    with _intact():
        return await ledger.inclusion(session, index, tree_size)


async def consistency(session: AsyncSession, first: int, second: int) -> list[bytes]:
    """The proof that the tree of `first` leaves is a prefix of the tree of `second`."""
    size = await ledger.committed_size(session)
    if not first <= second <= size:
        raise InvalidProofRequest(f"Need first <= second <= {size} (the log's size).")
    with _intact():
        return await ledger.consistency(session, first, second)
