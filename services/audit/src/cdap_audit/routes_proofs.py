"""Routes of Merkle proofs (auditor role only): inclusion of an entry, consistency of two trees."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter

from cdap_audit import proofs
from cdap_audit.schemas import ConsistencyProof, InclusionProof
from cdap_audit.web import ERRORS, Position
from cdap_shared.auth import require_roles
from cdap_shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[require_roles("auditor")])


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


@router.get("/proofs/inclusion", response_model=InclusionProof, responses=ERRORS)
async def inclusion_proof(index: Position, tree_size: Position, session: SessionDep) -> dict[str, Any]:
    """RFC 9162 §2.1.3 audit path of leaf `index` in the tree of `tree_size` leaves."""
    hashes = await proofs.inclusion(session, index, tree_size)
    return {"index": index, "tree_size": tree_size, "hashes": _b64(hashes)}


@router.get("/proofs/consistency", response_model=ConsistencyProof, responses=ERRORS)
async def consistency_proof(first: Position, second: Position, session: SessionDep) -> dict[str, Any]:
    """RFC 9162 §2.1.4 proof that the tree of `first` leaves is a prefix of the tree of `second`."""
    hashes = await proofs.consistency(session, first, second)
    return {"first": first, "second": second, "hashes": _b64(hashes)}
