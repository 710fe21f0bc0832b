"""What identity's routes need besides the caller (`cdap_shared.auth.CurrentActor`) and "now"
(`cdap_shared.clock.Now`): a CAF admin caller, the settings and what `app.py` built (sessions, signing
keys, client cache), the commit of a command, and the one table from domain refusals to HTTP.

Routes parse, call a use case, and map its result to a body; a `domain.Refused` they let through is
answered by `PROBLEMS` (installed by `app.py`). The token endpoints answer RFC 6749 errors instead.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_identity import domain
from cdap_identity.client_cache import ClientCache, SignIns
from cdap_identity.config import Settings
from cdap_identity.keys import KeyRing
from cdap_identity.tokens import TokenSettings
from cdap_shared.actor import Actor
from cdap_shared.auth import Principal, actor_of, require_roles
from cdap_shared.refusals import REFUSALS

T = TypeVar("T")

# Domain refusal -> (status, title): the only place identity turns a refusal into HTTP.
PROBLEMS: dict[type[Exception], tuple[int, str]] = {**REFUSALS, domain.BadProof: (400, "Invalid or expired")}

Id = Annotated[str, Path(min_length=1, max_length=64)]


async def settings(request: Request) -> Settings:
    """The settings `app.py` built the service with."""
    built: Settings = request.app.state.settings
    return built


async def sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """The session factory, for a route that opens a session only on some paths (the token endpoint)."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return factory


async def key_ring(request: Request) -> KeyRing:
    """The signing keys as last loaded (the key reload job replaces them)."""
    ring: KeyRing = request.app.state.key_ring
    return ring


async def client_cache(request: Request) -> ClientCache:
    cache: ClientCache = request.app.state.client_cache
    return cache


async def sign_ins(request: Request) -> SignIns:
    recorder: SignIns = request.app.state.sign_ins
    return recorder


async def client_ip(request: Request) -> str | None:
    """The caller's address (the socket's peer, or what a trusted proxy said)."""
    return request.client.host if request.client else None


async def caf_admin(principal: Annotated[Principal, require_roles(domain.CAF_ADMIN)]) -> Actor:
    """The caller, who must be a CAF admin (403 otherwise)."""
    return actor_of(principal)


Config = Annotated[Settings, Depends(settings)]
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]
Ring = Annotated[KeyRing, Depends(key_ring)]
Clients = Annotated[ClientCache, Depends(client_cache)]
SignInLog = Annotated[SignIns, Depends(sign_ins)]
ClientIp = Annotated[str | None, Depends(client_ip)]
CafAdmin = Annotated[Actor, Depends(caf_admin)]


async def token_settings(config: Config, ring: Ring) -> TokenSettings:
    """What issuing tokens needs: the signing keys and the settings."""
    return TokenSettings(
        ring=ring,
        access_seconds=config.access_token_seconds,
        refresh_days=config.refresh_token_days,
        totp_profiles=frozenset(config.totp_profiles),
        enrolment_seconds=config.totp_enrolment_seconds,
    )


Issuing = Annotated[TokenSettings, Depends(token_settings)]


async def write(
    session: AsyncSession,
    use_case: Awaitable[T],
    *,
    keep: tuple[type[Exception], ...] = (),
) -> T:
    """Run a use case and commit its transaction: where every HTTP command of identity commits.

    A refusal of a `keep` kind is committed too before it is answered, for what it recorded counts: a
    wrong password or code towards the lockout, a reused refresh token's revoked family. Any other error
    leaves the session to roll back."""
    try:
        result = await use_case
    except keep:
        await session.commit()
        raise
    await session.commit()
    return result
