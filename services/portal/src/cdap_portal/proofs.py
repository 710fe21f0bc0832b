"""An audit entry checked as an outside auditor would: the latest checkpoint's signature with the log's
verifier key, then the entry's inclusion proof against that checkpoint's root. The checks are
`cdap_shared.tlog`'s, the ones the audit service and `cdap audit verify` use, here fed with what the
audit API answered."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cdap_shared.tlog import merkle
from cdap_shared.tlog.verify import VerificationFailed, leaf_of, open_checkpoint, parse_key


@dataclass(frozen=True)
class ProofCheck:
    """`verified`: the entry is in the signed tree; `pending`: the checkpoint is older than the entry;
    `failed`: a signature, a field or the proof does not hold (`detail` says which)."""

    outcome: str
    detail: str
    tree_size: int | None = None
    root_hash: str | None = None


def check_signed(note: str, key: str) -> tuple[int, bytes]:
    """The checkpoint's tree size and root, once its signature verifies with `key`."""
    checkpoint = open_checkpoint(note, parse_key(key), "the latest checkpoint")
    return checkpoint.tree_size, checkpoint.root_hash


def check_entry(
    entry: dict[str, Any], index: int, note: str, key: str, proof: list[str] | None
) -> ProofCheck:
    """Check `entry` (as `GET /v1/entries/{index}` served it) against the signed `note`; `proof` is the
    inclusion proof for the note's tree size (None when the entry is beyond it)."""
    try:
        size, root = check_signed(note, key)
        shown_root = base64.b64encode(root).decode()
        leaf = leaf_of(entry, index)
        if index >= size:
            return ProofCheck(
                "pending", f"entry {index} is after the latest signed tree of {size}", size, shown_root
            )
        hashes = [base64.b64decode(h, validate=True) for h in proof or []]
        if not merkle.verify_inclusion(merkle.leaf_hash(leaf), index, size, hashes, root):
            raise VerificationFailed(f"entry {index} was altered: its bytes are not in the signed tree")
    except VerificationFailed as exc:
        return ProofCheck("failed", str(exc))
    except ValueError as exc:
        return ProofCheck("failed", f"the proof is malformed: {exc}")
    return ProofCheck("verified", f"entry {index} is in the signed tree of {size}", size, shown_root)
