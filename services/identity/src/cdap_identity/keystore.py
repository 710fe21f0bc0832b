"""The signing key ring, persisted in the identity database so every replica signs and publishes alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_identity.keys import KeyRing, SigningKey
from cdap_identity.models import SigningKeyRecord

# Serialises key creation between replicas starting at the same time.
_KEY_LOCK = 0x0CDA9_4E75


async def load_ring(sessions: async_sessionmaker[AsyncSession], token_lifetime: int) -> KeyRing:
    """The ring as stored; creates the first key if there is none."""
    async with sessions() as session, session.begin():
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})
        records = (await session.execute(select(SigningKeyRecord))).scalars().all()
        ring = KeyRing(
            (
                SigningKey.from_pem(r.pem, kid=r.kid, created_at=r.created_at, retired_at=r.retired_at)
                for r in records
            ),
            token_lifetime=timedelta(seconds=token_lifetime),
        )
        try:
            ring.current  # noqa: B018 - raises when no key is active
        except LookupError:
            await _store(session, ring.rotate(datetime.now(UTC)))
    return ring


async def rotate(sessions: async_sessionmaker[AsyncSession], token_lifetime: int) -> SigningKey:
    """Make a new current key and retire the others (tokens they signed stay verifiable until expiry)."""
    ring = await load_ring(sessions, token_lifetime)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        new = ring.rotate(now)
        for key in ring.keys:
            if key.kid != new.kid:
                record = await session.get(SigningKeyRecord, key.kid)
                if record is not None and record.retired_at is None:
                    record.retired_at = key.retired_at
        await _store(session, new)
    return new


async def _store(session: AsyncSession, key: SigningKey) -> None:
    session.add(
        SigningKeyRecord(kid=key.kid, pem=key.to_pem(), created_at=key.created_at, retired_at=key.retired_at)
    )
