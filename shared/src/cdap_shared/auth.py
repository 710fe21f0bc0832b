"""Bearer-token verification against the identity service's JWKS (EdDSA / Ed25519), for every service.

Keys are cached; an unknown `kid` triggers one refresh (rate-limited), so a rotated key is picked up
without a restart and a flood of forged kids cannot hammer identity.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
import httpx
import jwt
from fastapi import Depends, Request

from cdap_shared.actor import Actor
from cdap_shared.clock import civil_today
from cdap_shared.problems import Problem
from cdap_shared.standing import NotInGoodStanding, StandingSource, judge

ALGORITHMS = ["EdDSA"]


@dataclass(frozen=True)
class GrantClaim:
    id: str
    profile: str
    department: str


@dataclass(frozen=True)
class Principal:
    """The verified caller: a person (`sub` = user id) or a partner system (`sub` = client id)."""

    sub: str
    org: str | None
    roles: frozenset[str]
    grants: tuple[GrantClaim, ...]
    jti: str
    exp: int
    department: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class TokenVerifier:
    """Verifies access tokens; `keys` may be given directly (tests) or fetched from `jwks_url`."""

    def __init__(
        self,
        jwks_url: str | None,
        audience: str,
        issuer: str | None = None,
        *,
        keys: dict[str, Any] | None = None,
        cache_seconds: float = 300.0,
        min_refresh_interval: float = 5.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.audience = audience
        self.issuer = issuer
        self.cache_seconds = cache_seconds
        self.min_refresh_interval = min_refresh_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        # Verified tokens, until they expire: a lookup path verifies the same token many times over its
        # 5 minutes. Only signatures are cached; the standing is judged at each call (`current_principal`).
        self._verified: dict[str, Principal] = {}
        self._lock = asyncio.Lock()
        if keys is not None:
            self._load(keys)
            self._fetched_at = float("inf")

    def _load(self, jwks: dict[str, Any]) -> None:
        keyset = jwt.PyJWKSet.from_dict(jwks)
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}

    def use_keys(self, jwks: dict[str, Any]) -> None:
        """Replace the key set of a verifier that is given its keys (identity verifying its own tokens)."""
        self._load(jwks)
        self._verified.clear()

    async def _refresh(self, force: bool) -> None:
        if self.jwks_url is None:
            return
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if age < self.min_refresh_interval or (not force and age < self.cache_seconds):
                return
            try:
                async with httpx.AsyncClient(timeout=3.0) as client:
                    response = await client.get(self.jwks_url)
                    response.raise_for_status()
                    self._load(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKError) as exc:
                if not self._keys:
                    raise Problem(503, "Token keys unavailable", "Try again shortly.") from exc
            self._fetched_at = time.monotonic()

    async def load_keys(self) -> None:
        """Fetch the key set now unless a fresh one is held: a service's warm-up, so that its first requests
        wait for no fetch. Raises a 503 `Problem` if it cannot be fetched and none is held."""
        await self._refresh(force=False)

    async def key_for(self, kid: str) -> Any:
        await self.load_keys()
        if kid not in self._keys:
            await self._refresh(force=True)
        if kid not in self._keys:
            raise unauthorized("Unknown signing key.")
        return self._keys[kid].key

    async def verify(self, token: str) -> Principal:
        """Check signature, algorithm, audience, issuer and expiry; raise a 401 Problem otherwise."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.exp > time.time():
                return cached
            del self._verified[token]
        principal = await self._verify(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()  # bounded: a burst of distinct tokens only costs re-verification
        self._verified[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise unauthorized("Malformed token.") from exc
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise unauthorized("Unsupported token algorithm.")
        key = await self.key_for(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("Token expired.") from exc
        except jwt.InvalidTokenError as exc:
            raise unauthorized("Invalid token.") from exc
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        grants = tuple(
            GrantClaim(id=str(g["id"]), profile=str(g["profile"]), department=str(g["department"]))
            for g in claims.get("grants") or []
        )
        return Principal(
            sub=str(claims["sub"]),
            org=claims.get("org"),
            roles=frozenset(str(r) for r in claims.get("roles") or []),
            grants=grants,
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
            department=claims.get("department"),
            claims=claims,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise unauthorized("Token claims are malformed.") from exc


def bearer_token(request: Request) -> str:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("A bearer token is required.")
    return token.strip()


async def verified_principal(request: Request) -> Principal:
    """The caller whose token the app's `state.token_verifier` verified, its standing not yet judged: for a
    route that judges it itself (`standing.judge`) from facts its own statement reads (dossiers' lookup);
    every other route takes `CurrentPrincipal`."""
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(bearer_token(request))


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency of every route that takes a token: the verified caller (the app's
    `state.token_verifier`) as identity's current state allows it (`state.standing`): its ended grants
    dropped, and a 403 with the `reason` when its account, client or grant is no longer honoured.

    A service may set `state.record_refusal(request, principal, reason) -> headers` to record such a
    refusal before it is answered (dossiers records it as a consultation)."""
    principal = await verified_principal(request)
    source: StandingSource = request.app.state.standing
    try:
        facts = await source.facts(principal)
    except (asyncpg.InterfaceError, OSError, TimeoutError) as exc:  # the database is unreachable
        raise Problem(503, "Service unavailable", "Try again shortly.") from exc
    try:
        return judge(principal, facts, civil_today())
    except NotInGoodStanding as refusal:
        record = getattr(request.app.state, "record_refusal", None)
        headers = await record(request, principal, refusal.reason) if record is not None else {}
        raise Problem(403, refusal.title, headers=headers, reason=refusal.reason) from None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def actor_of(principal: Principal) -> Actor:
    """The verified caller in the domain's terms (its e-mail lower-cased, as services store it)."""
    email = principal.claims.get("email")
    return Actor(
        principal.sub,
        principal.roles,
        principal.org,
        principal.department,
        email.lower() if isinstance(email, str) else None,
    )


async def current_actor(principal: CurrentPrincipal) -> Actor:
    """Dependency: the caller as an `Actor` (401/403 as `current_principal` says)."""
    return actor_of(principal)


CurrentActor = Annotated[Actor, Depends(current_actor)]


def require_roles(*roles: str) -> Any:
    """Dependency factory: 403 unless the caller holds one of `roles`."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has_role(*roles):
            raise Problem(403, "Forbidden", "Your role does not allow this.", reason="role_not_allowed")
        return principal

    return Depends(check)
