"""Signed checkpoints: the note signing key, signing the tree head whenever the tree grew, and the
witnesses' cosignatures added to them.

The key is `CDAP_AUDIT_SIGNING_KEY`, or the file named by `CDAP_AUDIT_SIGNING_KEY_FILE`, when set
(the production choice: a secret store, or a mounted secret). Otherwise one is generated at first
start and kept in the `signing_key` table, so restarts and replicas sign with the same key; the race
between replicas starting together is settled by the primary key (the loser reads the winner's key).
A key in the database is only as safe as the database: whoever can write it can sign a rewritten
log. Witness cosignatures are what such a forger cannot make.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_audit import ledger
from cdap_audit.domain import (
    CosignatureRefused,
    KeyUnavailable,
    NoCheckpointYet,
    NotASignedNote,
    NotWitnessedYet,
    NoWitnessConfigured,
    UnknownCheckpoint,
)
from cdap_audit.models import CheckpointRecord, SigningKey
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.tlog.checkpoint import (
    Checkpoint,
    CosignerVerifier,
    InvalidSignatureError,
    NoteError,
    NoteSigner,
    cosignatures,
    split_note,
)

log = structlog.get_logger(__name__)

SOURCE = "/cdap/audit"
CHECKPOINT = CheckpointRecord.__table__  # type: ignore[attr-defined]
KEY = SigningKey.__table__  # type: ignore[attr-defined]


class SigningKeyError(SystemExit):
    """A configured signing or witness key is unusable: the service refuses to start, saying why."""


def configured_signer(key: SecretStr | None, key_file: Path | None) -> NoteSigner | None:
    """The signer from the settings, checked at start; None when a stored one is to be used."""
    if key is not None and key_file is not None:
        raise SigningKeyError("set CDAP_AUDIT_SIGNING_KEY or CDAP_AUDIT_SIGNING_KEY_FILE, not both")
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningKeyError(f"CDAP_AUDIT_SIGNING_KEY_FILE cannot be read: {exc}") from exc
        return _signer(text, "CDAP_AUDIT_SIGNING_KEY_FILE's content")
    if key is not None:
        return _signer(key.get_secret_value(), "CDAP_AUDIT_SIGNING_KEY")
    return None


def _signer(text: str, what: str) -> NoteSigner:
    try:
        return NoteSigner.from_key(text)
    except ValueError as exc:  # the message never quotes the key
        expected = "PRIVATE+KEY+<name>+<id>+<seed>"
        raise SigningKeyError(f"{what} is not a note signer key ({expected}): {exc}") from exc


def configured_witnesses(keys: Iterable[str]) -> tuple[CosignerVerifier, ...]:
    """The witnesses whose cosignatures are accepted (`CDAP_AUDIT_WITNESS_KEYS`), checked at start."""
    try:
        return tuple(CosignerVerifier.from_key(key) for key in keys)
    except ValueError as exc:
        raise SigningKeyError(f"CDAP_AUDIT_WITNESS_KEYS holds a malformed witness key: {exc}") from exc


def key_name(origin: str) -> str:
    """A note key name from the origin (key names may hold neither spaces nor '+')."""
    return re.sub(r"[\s+]", "_", origin)


async def stored_signer(sessions: async_sessionmaker[AsyncSession], origin: str) -> NoteSigner:
    """The signer kept in the database (created on first call), when none is configured."""
    async with sessions() as session, session.begin():
        stored = (await session.execute(select(KEY.c.signer_key).where(KEY.c.id == 1))).scalar_one_or_none()
        if stored is None:
            fresh = NoteSigner.generate(key_name(origin))
            await session.execute(
                pg_insert(KEY)
                .values(id=1, signer_key=fresh.signer_key, verifier_key=fresh.verifier_key)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            stored = (await session.execute(select(KEY.c.signer_key).where(KEY.c.id == 1))).scalar_one()
            log.info("generated the checkpoint signing key", verifier_key=fresh.verifier_key)
    return NoteSigner.from_key(stored)


class CheckpointKey:
    """The log's signing key: the configured one, else the one kept in the database (loaded, or
    generated, on first use, then kept for the process's life)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], origin: str, configured: NoteSigner | None
    ) -> None:
        self.sessions = sessions
        self.origin = origin
        self._signer = configured

    async def signer(self) -> NoteSigner:
        if self._signer is None:
            self._signer = await stored_signer(self.sessions, self.origin)
        return self._signer

    async def verifier_key(self) -> str:
        """The note verifier key that checks every checkpoint; `KeyUnavailable` if its first load fails."""
        try:
            return (await self.signer()).verifier_key
        except (SQLAlchemyError, OSError) as exc:  # first use, and the database is down
            raise KeyUnavailable("The signing key could not be loaded; retry.") from exc


async def latest(session: AsyncSession) -> CheckpointRecord | None:
    query = select(CheckpointRecord).order_by(CHECKPOINT.c.tree_size.desc()).limit(1)
    return (await session.execute(query)).scalars().first()


async def sign_if_grown(
    sessions: async_sessionmaker[AsyncSession], signer: NoteSigner, origin: str, topic: str
) -> CheckpointRecord | None:
    """Sign the committed tree if it is larger than the last checkpoint (or none exists yet).

    The checkpoint row and its `audit.checkpoint.signed` event are written in one transaction; two
    replicas signing the same size are settled by the unique `tree_size` (one row, one event).
    """
    async with sessions() as session, session.begin():
        size = await ledger.committed_size(session)
        last = await latest(session)
        if last is not None and size <= last.tree_size:
            if size < last.tree_size:
                log.error(
                    "tree smaller than the last checkpoint, not signing", size=size, last=last.tree_size
                )
            return None
        root = await ledger.root_at(session, size)
        note = signer.sign(Checkpoint(origin, size, root).body())
        inserted = (
            await session.execute(
                pg_insert(CHECKPOINT)
                .values(origin=origin, tree_size=size, root_hash=root, note=note)
                .on_conflict_do_nothing(index_elements=["tree_size"])
                .returning(CHECKPOINT.c.id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            return None
        data = ev.CheckpointSigned(
            origin=origin, tree_size=size, root_hash=base64.b64encode(root).decode(), note=note
        )
        event = ev.make_event("audit.checkpoint.signed", source=SOURCE, subject=origin, data=data)
        await outbox.add(session, event, topic=topic)
        return CheckpointRecord(id=inserted, origin=origin, tree_size=size, root_hash=root, note=note)


def _marker(witness_name: str) -> str:
    """What a note carrying a signature line of this key name contains (its lines follow newlines)."""
    return f"\n\u2014 {witness_name} "


async def add_cosignatures(
    sessions: async_sessionmaker[AsyncSession], note: str, witnesses: Iterable[CosignerVerifier]
) -> str:
    """Append to the stored checkpoint the valid cosignatures of `note` by configured witnesses (raises
    a `domain.CosignatureRejected` saying why not).

    The note must carry the exact text of a checkpoint signed here; a witness that already cosigned
    it keeps its first line (resubmitting is harmless). The row is locked so two witnesses adding
    their lines at once both keep them. Returns the note as now served.
    """
    try:
        text, _ = split_note(note)
        checkpoint = Checkpoint.parse(text)
        offered = cosignatures(note, witnesses)
    except InvalidSignatureError as exc:
        raise CosignatureRefused(str(exc)) from exc
    except NoteError as exc:
        raise NotASignedNote(str(exc)) from exc
    except ValueError as exc:
        raise NotASignedNote(f"not a checkpoint: {exc}") from exc
    if not offered:
        raise CosignatureRefused("the note carries no cosignature by a witness configured here")
    size = checkpoint.tree_size
    query = select(CHECKPOINT.c.note).where(CHECKPOINT.c.tree_size == size).with_for_update()
    async with sessions() as session, session.begin():
        stored: str | None = (await session.execute(query)).scalar_one_or_none()
        if stored is None or split_note(stored)[0] != text:
            raise UnknownCheckpoint(f"no checkpoint with this text was signed here (size {size})")
        try:
            present = cosignatures(stored, witnesses)
        except InvalidSignatureError:  # a forged line in the database: it stays, for verify to see
            present = {}
        added = "".join(f"{line}\n" for witness, line in offered.items() if witness not in present)
        if added:
            stored += added
            row = CHECKPOINT.c.tree_size == size
            await session.execute(update(CHECKPOINT).where(row).values(note=stored))
            log.info("checkpoint cosigned", tree_size=size, witnesses=[w.name for w in offered])
    return stored


async def current(session: AsyncSession) -> CheckpointRecord:
    """The newest checkpoint; `NoCheckpointYet` before the first."""
    record = await latest(session)
    if record is None:
        raise NoCheckpointYet("The first checkpoint is signed within seconds of start.")
    return record


async def witnessed(
    session: AsyncSession, configured: Sequence[CosignerVerifier], names: Sequence[str] | None
) -> CheckpointRecord:
    """The newest checkpoint cosigned by every witness in `names`, or by any configured witness when
    none is named; `NoWitnessConfigured` or `NotWitnessedYet` when there is none."""
    if not (names or configured):
        raise NoWitnessConfigured("Set CDAP_AUDIT_WITNESS_KEYS to accept cosignatures.")
    if names:
        record = await latest_witnessed(session, names)
    else:
        records = [await latest_witnessed(session, [w.name]) for w in configured]
        record = max((r for r in records if r), key=lambda r: r.tree_size, default=None)
    if record is None:
        raise NotWitnessedYet("No checkpoint carries a cosignature of these witnesses yet.")
    return record


async def latest_witnessed(session: AsyncSession, witness_names: Iterable[str]) -> CheckpointRecord | None:
    """The newest checkpoint carrying a signature line of every named witness.

    Scans from the newest: witnesses cosign recent checkpoints, so the match is near the top unless
    the witness has stopped (then the scan reads back to its last cosignature).
    """
    query = select(CheckpointRecord).order_by(CHECKPOINT.c.tree_size.desc()).limit(1)
    for name in witness_names:
        query = query.where(CHECKPOINT.c.note.contains(_marker(name), autoescape=True))
    return (await session.execute(query)).scalars().first()
