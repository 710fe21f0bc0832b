"""Signed checkpoints: the note signing key, and signing the tree head whenever the tree grew.

The key is `CDAP_AUDIT_SIGNING_KEY` when set. Otherwise one is generated at first start and kept in
the `signing_key` table, so restarts and replicas sign with the same key; the race between replicas
starting together is settled by the primary key (the loser reads the winner's key). A key in the
database is only as safe as the database: production should set the variable from a secret store.
"""

from __future__ import annotations

import base64
import re

import structlog
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_audit import ledger
from cdap_audit.checkpoint import Checkpoint, NoteSigner
from cdap_audit.models import CheckpointRecord, SigningKey
from cdap_shared import events as ev
from cdap_shared import outbox

log = structlog.get_logger(__name__)

SOURCE = "/cdap/audit"
CHECKPOINT = CheckpointRecord.__table__  # type: ignore[attr-defined]
KEY = SigningKey.__table__  # type: ignore[attr-defined]


class SigningKeyError(SystemExit):
    """`CDAP_AUDIT_SIGNING_KEY` is set but unusable: the service refuses to start, saying why."""


def configured_signer(configured: SecretStr | None) -> NoteSigner | None:
    """The signer from the settings, checked at start; None when a stored one is to be used."""
    if configured is None:
        return None
    try:
        return NoteSigner.from_key(configured.get_secret_value())
    except ValueError as exc:
        raise SigningKeyError(
            f"CDAP_AUDIT_SIGNING_KEY is not a note signer key (PRIVATE+KEY+<name>+<id>+<seed>): {exc}"
        ) from exc


def key_name(origin: str) -> str:
    """A note key name from the origin (key names may hold neither spaces nor '+')."""
    return re.sub(r"[\s+]", "_", origin)


async def load_signer(
    sessions: async_sessionmaker[AsyncSession], configured: SecretStr | None, origin: str
) -> NoteSigner:
    """The configured signer, else the one stored in the database (created on first call)."""
    signer = configured_signer(configured)
    if signer is not None:
        return signer
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
