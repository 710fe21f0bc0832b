"""`cdap audit witness`: a separate process, with its own key, that cosigns the log's checkpoints.

Each round it fetches the latest checkpoint, checks the log's signature, and checks that the tree it
describes extends the last one it cosigned (RFC 9162 consistency proof). Only then does it cosign
(c2sp.org/tlog-cosignature, Ed25519 `cosignature/v1`), remember the new tree in its state file, and
hand the cosignature to the audit service. A checkpoint that does not extend what it cosigned before
(a log rewritten or truncated, even one re-signed with the log's own key) is refused and logged as an
error, every round, and the witness keeps its state: it never cosigns a fork.

The state file is the witness's memory: keep it on storage the audit service's operators cannot
write. The first checkpoint ever seen is cosigned on trust (there is nothing to compare it with).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from cdap_audit import merkle
from cdap_audit.client import AuditClient, AuditClientError
from cdap_shared.tlog.checkpoint import (
    Checkpoint,
    Cosigner,
    NoteError,
    NoteVerifier,
    cosignatures,
    open_note,
)

log = structlog.get_logger(__name__)


class Refused(Exception):
    """The checkpoint is not one this witness may cosign; the message says why."""


@dataclass(frozen=True)
class WitnessState:
    """The log this witness follows (its origin and key) and the largest tree it cosigned."""

    origin: str
    log_key: str
    tree_size: int
    root_hash: str  # base64

    @classmethod
    def load(cls, path: Path) -> WitnessState | None:
        """The saved state, or None before the first cosignature; `ValueError` if it is unreadable."""
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Never start afresh on a damaged memory: that would cosign whatever the log shows now.
            raise ValueError(f"the witness state {path} is unreadable: {exc!r}") from exc

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old state or the new one, never half of one."""
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(partial, path)


def check(
    note: str,
    log_key: NoteVerifier,
    state: WitnessState | None,
    consistency: Callable[[int, int], list[bytes]],
) -> Checkpoint:
    """The checkpoint of `note` if it may be cosigned after `state`; raise `Refused` otherwise."""
    try:
        checkpoint = Checkpoint.parse(open_note(note, log_key))
    except (NoteError, ValueError) as exc:
        raise Refused(f"the checkpoint is not signed by the log's key {log_key.key}: {exc}") from exc
    if state is None:
        return checkpoint
    old_root = base64.b64decode(state.root_hash)
    if checkpoint.origin != state.origin:
        raise Refused(f"origin changed from {state.origin!r} to {checkpoint.origin!r}")
    if checkpoint.tree_size < state.tree_size:
        raise Refused(f"the log shrank: {checkpoint.tree_size} entries, {state.tree_size} cosigned before")
    if checkpoint.tree_size == state.tree_size:
        if checkpoint.root_hash != old_root:
            raise Refused(f"two different roots for tree size {checkpoint.tree_size}: the log was rewritten")
        return checkpoint
    proof = consistency(state.tree_size, checkpoint.tree_size)
    if not merkle.verify_consistency(
        state.tree_size, checkpoint.tree_size, old_root, checkpoint.root_hash, proof
    ):
        raise Refused(
            f"tree {checkpoint.tree_size} does not extend tree {state.tree_size} cosigned before: "
            "the log was rewritten"
        )
    return checkpoint


class Witness:
    """One witness: its cosigning key, the log it trusts, and where it keeps its state."""

    def __init__(self, client: AuditClient, cosigner: Cosigner, log_key: NoteVerifier, state_path: Path):
        self.client = client
        self.cosigner = cosigner
        self.log_key = log_key
        self.state_path = state_path

    def round(self, now: Callable[[], float] = time.time) -> WitnessState:
        """Check and cosign the latest checkpoint once; raise `Refused` or `AuditClientError`."""
        state = WitnessState.load(self.state_path)
        if state is not None and state.log_key != self.log_key.key:
            raise Refused(f"this state file follows the log key {state.log_key}, not {self.log_key.key}")
        note = self.client.checkpoint()["note"]
        checkpoint = check(note, self.log_key, state, self.client.consistency)
        text = checkpoint.body()
        if state is None or checkpoint.tree_size > state.tree_size:
            state = WitnessState(
                origin=checkpoint.origin,
                log_key=self.log_key.key,
                tree_size=checkpoint.tree_size,
                root_hash=base64.b64encode(checkpoint.root_hash).decode(),
            )
            # Remembered before it is handed out: a cosignature is a promise never to sign a fork of it.
            state.save(self.state_path)
        try:
            done = bool(cosignatures(note, [self.cosigner.verifier]))
        except NoteError:  # a line in this witness's name that it never made: add a true one
            done = False
        if not done:
            line = self.cosigner.cosign(text, int(now()))
            self.client.add_cosignature(f"{text}\n{line}\n")
        return state

    def run(self, interval: float, once: bool = False) -> bool:
        """Rounds every `interval` seconds (one with `once`); whether the last round cosigned."""
        while True:
            try:
                state = self.round()
                log.info("cosigned", origin=state.origin, tree_size=state.tree_size)
                cosigned = True
            except Refused as exc:
                log.error("refusing to cosign", reason=str(exc))
                cosigned = False
            except AuditClientError as exc:
                log.warning("audit service unavailable, retrying", error=str(exc))
                cosigned = False
            if once:
                return cosigned
            time.sleep(interval)
