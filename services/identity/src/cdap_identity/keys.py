"""Ed25519 signing keys for access tokens (EdDSA JWTs), their JWKS and their rotation.

A rotated-out key stays in the JWKS for one token lifetime (plus a margin for clock skew and verifier
caches), so tokens it signed just before the rotation keep verifying until they expire, and no longer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ALGORITHM = "EdDSA"
DEFAULT_TOKEN_LIFETIME = timedelta(seconds=300)
DEFAULT_PUBLICATION_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key: `kid` names it in token headers and in the JWKS."""

    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime
    retired_at: datetime | None = None

    @classmethod
    def generate(cls, now: datetime, kid: str | None = None) -> SigningKey:
        """A new key created at `now`; its kid defaults to the RFC 7638 thumbprint of its public key."""
        private_key = Ed25519PrivateKey.generate()
        return cls(kid or jwk_thumbprint(private_key), private_key, now)

    def to_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM (for storage; protect it at rest)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    @classmethod
    def from_pem(
        cls,
        pem: str | bytes,
        *,
        created_at: datetime,
        kid: str | None = None,
        retired_at: datetime | None = None,
    ) -> SigningKey:
        """Load a key stored by `to_pem`; raises ValueError if the PEM is not an Ed25519 private key."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        private_key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError("Not an Ed25519 private key.")
        return cls(kid or jwk_thumbprint(private_key), private_key, created_at, retired_at)

    def public_jwk(self) -> dict[str, str]:
        """Public JWK as published in the JWKS (never contains the private part `d`)."""
        jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {
            "kty": jwk["kty"],
            "crv": jwk["crv"],
            "x": jwk["x"],
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    @cached_property
    def _jws_header(self) -> bytes:
        return _b64(_compact({"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}))

    def sign(self, claims: Mapping[str, Any]) -> str:
        """`claims` as a compact JWS (a JWT) signed by this key, byte for byte what PyJWT writes, without
        its per-call key and header handling, which cost more than the Ed25519 signature itself."""
        signing_input = self._jws_header + b"." + _b64(_compact(claims))
        return (signing_input + b"." + _b64(self.private_key.sign(signing_input))).decode("ascii")

    def retire(self, now: datetime) -> SigningKey:
        """This key no longer signing from `now` (kept for verification for a while)."""
        return replace(self, retired_at=now)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def jwk_thumbprint(private_key: Ed25519PrivateKey) -> str:
    """RFC 7638 thumbprint of the public key: a stable kid that can be recomputed from the key itself."""
    jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    digest = hashlib.sha256(_compact({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]})).digest()
    return _b64(digest).decode("ascii")


class KeyRing:
    """The identity service's signing keys: the newest non-retired one signs, recent ones still verify.

    `token_lifetime` must be at least the lifetime of any token signed with the ring (enforced by
    `issue_access_token`); `margin` covers clock skew between services and verifiers' JWKS caching.
    """

    def __init__(
        self,
        keys: Iterable[SigningKey] = (),
        *,
        token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
        margin: timedelta = DEFAULT_PUBLICATION_MARGIN,
    ) -> None:
        self._keys: dict[str, SigningKey] = {}
        self.token_lifetime = token_lifetime
        self.margin = margin
        for key in keys:
            self.add(key)

    def add(self, key: SigningKey) -> None:
        """Add a key (e.g. loaded from storage); refuses a kid already present."""
        if key.kid in self._keys:
            raise ValueError(f"Duplicate key id {key.kid!r}.")
        self._keys[key.kid] = key

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """All keys, newest first."""
        return tuple(sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True))

    @property
    def current(self) -> SigningKey:
        """The key that signs: the newest one not retired. LookupError if there is none (rotate first)."""
        for key in self.keys:
            if key.retired_at is None:
                return key
        raise LookupError("No active signing key; call rotate().")

    def get(self, kid: str) -> SigningKey | None:
        """The key with this kid, if the ring holds it."""
        return self._keys.get(kid)

    def published(self, key: SigningKey, now: datetime) -> bool:
        """Whether `key` still belongs in the JWKS at `now`."""
        return key.retired_at is None or now - key.retired_at < self.token_lifetime + self.margin

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """The JWKS document: current keys and those retired too recently for their tokens to have expired."""
        return {"keys": [k.public_jwk() for k in self.keys if self.published(k, now)]}

    def rotate(self, now: datetime) -> SigningKey:
        """Create a new current key and retire every active one at `now`; returns the new key."""
        for key in list(self._keys.values()):
            if key.retired_at is None:
                self._keys[key.kid] = key.retire(now)
        new = SigningKey.generate(now)
        self.add(new)
        return new

    def prune(self, now: datetime) -> list[SigningKey]:
        """Drop the keys that are no longer published (nothing they signed can still be valid)."""
        gone = [k for k in self._keys.values() if not self.published(k, now)]
        for key in gone:
            del self._keys[key.kid]
        return gone


class IssuedToken(NamedTuple):
    token: str
    jti: str
    exp: datetime


RESERVED_CLAIMS = frozenset({"sub", "org", "roles", "grants", "aud", "iss", "iat", "nbf", "exp", "jti"})


def issue_access_token(
    ring: KeyRing,
    *,
    sub: str,
    org: str | None,
    roles: Sequence[str],
    grants: list[dict[str, Any]],
    now: datetime,
    lifetime: int = 300,
    audience: str = "cdap",
    issuer: str = "cdap-identity",
    extra: Mapping[str, Any] | None = None,
) -> IssuedToken:
    """Sign an access token with the ring's current key; returns (token, jti, exp).

    `extra` adds claims (e.g. "department") but may not override the standard ones.
    """
    if not 0 < lifetime <= ring.token_lifetime.total_seconds():
        # A token outliving the ring's lifetime could outlive its key's publication after a rotation.
        raise ValueError(f"lifetime must be between 1 and {ring.token_lifetime.total_seconds():.0f} seconds.")
    clash = RESERVED_CLAIMS.intersection(extra or {})
    if clash:
        raise ValueError(f"extra may not override {sorted(clash)}.")
    key = ring.current
    iat = int(now.timestamp())
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        **(extra or {}),
        "sub": sub,
        "org": org,
        "roles": list(roles),
        "grants": grants,
        "aud": audience,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "jti": jti,
    }
    return IssuedToken(key.sign(claims), jti, datetime.fromtimestamp(iat + lifetime, UTC))
