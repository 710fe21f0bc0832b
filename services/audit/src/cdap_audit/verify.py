"""`cdap audit verify`: check the live log against a checkpoint saved earlier, as an outside auditor.

What is checked, in order (the first failure stops with its reason):
1. the saved checkpoint's signature, with the key given or the one saved with it (and the
   cosignatures it carries of the witnesses given);
2. the current checkpoint's signature, with the same key (a server that changed its key fails);
   with witness keys, the current checkpoint is the newest one they cosigned, it must cover the log
   as it was when verify started, and each witness's cosignature must verify;
3. the log did not shrink, and the saved tree is a prefix of the current one (consistency proof);
4. `--entry N`: that entry's served fields are those of its hashed bytes, and the bytes are in the
   current tree (inclusion proof);
5. `--all-entries`: every entry from 0 is served, its fields match its bytes, and the root
   recomputed from all the bytes is the signed one.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdap_audit.client import AuditClient, AuditClientError
from cdap_shared.tlog import merkle
from cdap_shared.tlog.checkpoint import Checkpoint, CosignerVerifier, NoteError, cosignatures
from cdap_shared.tlog.verify import VerificationFailed, leaf_of, open_checkpoint, parse_key


@dataclass(frozen=True)
class SavedCheckpoint:
    """What `cdap audit checkpoint --save` writes: the checkpoint and the key it was signed with."""

    origin: str
    tree_size: int
    root_hash: str
    note: str
    verifier_key: str | None = None
    url: str | None = None
    saved_at: str | None = None

    @classmethod
    def load(cls, path: Path) -> SavedCheckpoint:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as exc:
            raise VerificationFailed(f"cannot read the saved checkpoint {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def fetch_checkpoint(
    client: AuditClient, witnesses: Sequence[CosignerVerifier] = (), witness_wait: float = 0
) -> SavedCheckpoint:
    """The current checkpoint (cosigned by `witnesses`, if any) and key, checked, ready to save."""
    body, key = current_checkpoint(client, witnesses, witness_wait), client.verifier_key()
    checkpoint = open_checkpoint(body["note"], parse_key(key), "the current checkpoint")
    _same_as_body(checkpoint, body, "the current checkpoint")
    check_cosigned(body["note"], witnesses, "the current checkpoint")
    return SavedCheckpoint(
        origin=checkpoint.origin,
        tree_size=checkpoint.tree_size,
        root_hash=base64.b64encode(checkpoint.root_hash).decode(),
        note=body["note"],
        verifier_key=key,
        url=client.url,
        saved_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def parse_witness_key(key: str) -> CosignerVerifier:
    try:
        return CosignerVerifier.from_key(key)
    except ValueError as exc:
        raise VerificationFailed(f"the witness key is malformed: {exc}") from exc


def current_checkpoint(
    client: AuditClient,
    witnesses: Sequence[CosignerVerifier],
    wait: float,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The latest checkpoint; with witnesses, the newest they all cosigned, once it covers the log.

    A witness cosigns a little after the log signs, so this waits up to `wait` seconds for a
    cosigned checkpoint at least as large as the latest one was on arrival. One that never comes
    means the witnesses did not see that tree, or refused it (a rewritten log).
    """
    latest = client.checkpoint()
    if not witnesses:
        return latest
    names = [w.name for w in witnesses]
    deadline = time.monotonic() + wait
    while True:
        try:
            cosigned: dict[str, Any] | None = client.witnessed(names)
        except AuditClientError as exc:
            if exc.status != 404:
                raise
            cosigned = None
        if cosigned is not None and cosigned["tree_size"] >= latest["tree_size"]:
            return cosigned
        if time.monotonic() >= deadline:
            newest = "none" if cosigned is None else f"size {cosigned['tree_size']}"
            raise VerificationFailed(
                f"no checkpoint cosigned by {', '.join(names)} covers the log's size {latest['tree_size']} "
                f"(newest cosigned: {newest}): the witness has not seen it yet, or refused it"
            )
        sleep(0.5)


def check_cosigned(note: str, witnesses: Sequence[CosignerVerifier], what: str) -> None:
    """Every witness's cosignature of `note` is there and verifies."""
    try:
        found = cosignatures(note, witnesses)
    except NoteError as exc:
        raise VerificationFailed(f"{what} carries a forged cosignature: {exc}") from exc
    for witness in witnesses:
        if witness not in found:
            raise VerificationFailed(f"{what} is not cosigned by witness {witness.key}")


def _same_as_body(checkpoint: Checkpoint, body: dict[str, Any] | SavedCheckpoint, what: str) -> None:
    fields = asdict(body) if isinstance(body, SavedCheckpoint) else body
    signed = (checkpoint.origin, checkpoint.tree_size, base64.b64encode(checkpoint.root_hash).decode())
    if (fields.get("origin"), fields.get("tree_size"), fields.get("root_hash")) != signed:
        raise VerificationFailed(f"{what}: its fields differ from its signed note")


def verify_log(
    client: AuditClient,
    saved: SavedCheckpoint,
    key: str | None,
    *,
    entry: int | None = None,
    all_entries: bool = False,
    progress: Callable[[int, int], None] | None = None,
    witnesses: Sequence[CosignerVerifier] = (),
    witness_wait: float = 0,
) -> list[str]:
    """Run the checks; return what was verified, or raise `VerificationFailed` with the reason."""
    key = key or saved.verifier_key
    if not key:
        raise VerificationFailed("no verifier key: pass --key (none was saved with the checkpoint)")
    verifier = parse_key(key)
    old = open_checkpoint(saved.note, verifier, "the saved checkpoint")
    _same_as_body(old, saved, "the saved checkpoint")
    try:
        cosignatures(saved.note, witnesses)  # a saved checkpoint need not be cosigned, but not forged
    except NoteError as exc:
        raise VerificationFailed(f"the saved checkpoint carries a forged cosignature: {exc}") from exc
    note = current_checkpoint(client, witnesses, witness_wait)["note"]
    current = open_checkpoint(note, verifier, "the current checkpoint")
    done = [f"signatures of both checkpoints verify with {verifier.name}+{verifier.key_id:08x}"]
    if witnesses:
        check_cosigned(note, witnesses, "the current checkpoint")
        names = ", ".join(f"{w.name}+{w.key_id:08x}" for w in witnesses)
        done.append(f"the current checkpoint (size {current.tree_size}) is cosigned by {names}")
    if current.origin != old.origin:
        raise VerificationFailed(f"origin changed from {old.origin!r} to {current.origin!r}")
    if current.tree_size < old.tree_size:
        raise VerificationFailed(
            f"the log was truncated: {current.tree_size} entries now, {old.tree_size} when saved"
        )
    proof = client.consistency(old.tree_size, current.tree_size)
    if not merkle.verify_consistency(
        old.tree_size, current.tree_size, old.root_hash, current.root_hash, proof
    ):
        raise VerificationFailed(
            f"the log was rewritten: tree {current.tree_size} does not extend the saved tree {old.tree_size}"
        )
    done.append(f"tree {current.tree_size} extends the saved tree {old.tree_size} (consistency proof)")
    if entry is not None:
        done.append(check_entry(client, entry, current))
    if all_entries:
        done.append(check_all_entries(client, current, progress))
    return done


def check_entry(client: AuditClient, index: int, current: Checkpoint) -> str:
    if not 0 <= index < current.tree_size:
        raise VerificationFailed(f"entry {index} is outside the signed tree of {current.tree_size}")
    leaf = leaf_of(client.entry(index), index)
    size, root = current.tree_size, current.root_hash
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf), index, size, client.inclusion(index, size), root):
        raise VerificationFailed(f"entry {index} was altered: its bytes are not in the signed tree")
    return f"entry {index} is in the signed tree (inclusion proof) and its fields match its bytes"


class RootAccumulator:
    """RFC 9162 root of a stream of leaf hashes, in O(log n) memory (a stack of perfect subtrees)."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def add(self, leaf_hash: bytes) -> None:
        width, value = 1, leaf_hash
        while self._stack and self._stack[-1][0] == width:
            _, left = self._stack.pop()
            width, value = width * 2, merkle.node_hash(left, value)
        self._stack.append((width, value))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return merkle.EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = merkle.node_hash(left, value)
        return value


def check_all_entries(
    client: AuditClient, current: Checkpoint, progress: Callable[[int, int], None] | None = None
) -> str:
    accumulator = RootAccumulator()
    for item in client.iter_entries():
        index = accumulator.size
        if index == current.tree_size:
            break  # entries appended after the checkpoint was signed
        if item.get("index") != index and index == 0:
            raise VerificationFailed(
                f"entries before {item.get('index')} are not served (purged by retention?): "
                "the root cannot be recomputed from entries; check single entries with --entry"
            )
        accumulator.add(merkle.leaf_hash(leaf_of(item, index)))
        if progress is not None:
            progress(accumulator.size, current.tree_size)
    if accumulator.size < current.tree_size:
        raise VerificationFailed(
            f"entries are missing: {accumulator.size} served for a signed tree of {current.tree_size}"
        )
    if accumulator.root() != current.root_hash:
        raise VerificationFailed("the root recomputed from every entry differs from the signed root")
    return f"the root recomputed from all {current.tree_size} entries is the signed root"
