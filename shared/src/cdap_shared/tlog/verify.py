"""Checks an outside auditor makes on what the audit API serves: a checkpoint's signature, and a served
entry's fields against its hashed bytes. Each failure raises `VerificationFailed` saying where."""

from __future__ import annotations

import base64
import json
from typing import Any

from cdap_shared.tlog.checkpoint import Checkpoint, NoteError, NoteVerifier, open_note

# Served entry fields that must equal the hashed leaf's (leaf name when it differs).
CHECKED_FIELDS = {
    "event_id": "event_id",
    "type": "event_type",
    "time": "time",
    "actor": "actor",
    "organisation_id": "organisation_id",
    "profile": "profile",
    "subject": "subject",
    "decision": "decision",
    "reason": "reason",
    "motif": "motif",
    "sections": "sections",
    "client_ip": "client_ip",
    "trace_id": "trace_id",
}


class VerificationFailed(Exception):
    """The log does not match what was signed or saved; the message says where."""


def parse_key(key: str) -> NoteVerifier:
    """The log's verifier key (a signed-note verifier key string)."""
    try:
        return NoteVerifier.from_key(key)
    except ValueError as exc:
        raise VerificationFailed(f"the verifier key is malformed: {exc}") from exc


def open_checkpoint(note: str, verifier: NoteVerifier, what: str) -> Checkpoint:
    """The checkpoint `note` carries, once its signature by `verifier` holds (`what` names it in errors)."""
    try:
        return Checkpoint.parse(open_note(note, verifier))
    except NoteError as exc:
        raise VerificationFailed(f"{what} is not signed by key {verifier.key}: {exc}") from exc
    except ValueError as exc:
        raise VerificationFailed(f"{what} is not a valid checkpoint: {exc}") from exc


def leaf_of(item: dict[str, Any], index: int) -> bytes:
    """The entry's hashed bytes, after checking the served fields say the same thing."""
    if item.get("index") != index:
        raise VerificationFailed(f"entry {index} is missing (got {item.get('index')} in its place)")
    try:
        leaf = base64.b64decode(item["leaf"], validate=True)
        document = json.loads(leaf)
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationFailed(f"entry {index}: its leaf is not base64 JSON") from exc
    for served, hashed in CHECKED_FIELDS.items():
        if item.get(served) != document.get(hashed):
            raise VerificationFailed(
                f"entry {index} was altered: {served} is {item.get(served)!r} "
                f"but its hashed bytes say {document.get(hashed)!r}"
            )
    return leaf
