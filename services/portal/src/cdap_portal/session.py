"""The session cookie and the CSRF tokens.

The portal stores nothing server-side: a browser's session is one cookie holding a random session id
and, once signed in, the access and refresh tokens identity issued. The cookie is Fernet-encrypted
(AES-CBC + HMAC): the browser can neither read the tokens nor forge a session. CSRF tokens are an HMAC
of the session id, so a token is only valid with the cookie it was issued for, and a new session id
(at sign-in and sign-out) invalidates every token issued before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "cdap_session"
# Between the password step and the TOTP step the e-mail and password must survive one round trip: they
# travel in their own encrypted cookie, valid 5 minutes, sent only to /login, deleted once used.
PENDING_COOKIE = "cdap_login"
PENDING_SECONDS = 300
# A sign-in that must first enrol TOTP keeps identity's enrolment ticket (not the password) in its own
# cookie, for as long as identity's ticket lives by default.
ENROLMENT_COOKIE = "cdap_enrol"
ENROLMENT_SECONDS = 600
CSRF_FIELD = "csrf_token"


def new_sid() -> str:
    return secrets.token_urlsafe(18)


@dataclass
class Session:
    """What the cookie holds. `sid` exists for anonymous visitors too (it binds their CSRF tokens)."""

    sid: str = field(default_factory=new_sid)
    access_token: str | None = None
    refresh_token: str | None = None
    started_at: float = 0.0  # when the person signed in: the session's absolute lifetime counts from it

    @property
    def authenticated(self) -> bool:
        return self.access_token is not None

    def claims(self) -> dict[str, Any]:
        """The access token's claims, read without checking the signature.

        Safe here: the token came from identity over the back channel and sits in an authenticated,
        encrypted cookie, so nobody else could have put it there; and the portal uses the claims only
        to choose what to show. Every API still verifies the token it receives.
        """
        if not self.access_token:
            return {}
        try:
            claims: dict[str, Any] = jwt.decode(self.access_token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return {}
        return claims

    def expires_at(self) -> float:
        return float(self.claims().get("exp", 0))


def derive_keys(secret: bytes) -> tuple[bytes, bytes]:
    """Two independent keys from one secret: one encrypts the cookie, the other signs CSRF tokens."""

    def derive(label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)

    return base64.urlsafe_b64encode(derive(b"cdap-portal cookie")), derive(b"cdap-portal csrf")


class SessionCodec:
    """Encrypts and decrypts the cookies; issues and checks CSRF tokens."""

    def __init__(self, secret: bytes | None = None) -> None:
        # No secret configured: one per process. Sessions then die with the process (documented).
        fernet_key, self._csrf_key = derive_keys(secret or secrets.token_bytes(32))
        self._fernet = Fernet(fernet_key)

    # ------------------------------------------------------------ session cookie
    def encode(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def decode(self, value: str) -> Session | None:
        """The session in `value`, or None if it was not issued by this key (tampered, old key, junk)."""
        try:
            raw = json.loads(self._fernet.decrypt(value.encode()))
            return Session(
                sid=str(raw["sid"]),
                access_token=raw.get("access_token"),
                refresh_token=raw.get("refresh_token"),
                started_at=float(raw.get("started_at", 0.0)),
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------ pending login (password → TOTP)
    def encode_pending(self, email: str, password: str) -> str:
        return self._fernet.encrypt(json.dumps({"email": email, "password": password}).encode()).decode()

    def decode_pending(self, value: str) -> tuple[str, str] | None:
        try:
            raw = json.loads(self._fernet.decrypt(value.encode(), ttl=PENDING_SECONDS))
            return str(raw["email"]), str(raw["password"])
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------ TOTP enrolment at sign-in
    def encode_enrolment(self, ticket: str) -> str:
        return self._fernet.encrypt(json.dumps({"ticket": ticket}).encode()).decode()

    def decode_enrolment(self, value: str) -> str | None:
        """The enrolment ticket identity handed out, if the cookie is ours and not older than its life."""
        try:
            return str(json.loads(self._fernet.decrypt(value.encode(), ttl=ENROLMENT_SECONDS))["ticket"])
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------ CSRF
    def csrf_token(self, sid: str) -> str:
        mac = hmac.new(self._csrf_key, b"csrf:" + sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def csrf_ok(self, sid: str, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(self.csrf_token(sid), token)


def session_expired(session: Session, max_age_seconds: float, now: float | None = None) -> bool:
    """True when a signed-in session is older than its absolute lifetime."""
    now = time.time() if now is None else now
    return session.authenticated and now - session.started_at > max_age_seconds
