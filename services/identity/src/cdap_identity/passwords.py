"""Password hashing and policy, TOTP second factor, one-time tokens.

Pure apart from reading the bundled deny-list once. Passwords are NFC-normalised before hashing, length
counting and comparison, so "é" typed as one code point or as "e" + combining accent is the same password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from importlib import resources

import pyotp
import segno
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# ----------------------------------------------------------------- hashing

# OWASP Password Storage Cheat Sheet, argon2id: m = 19 MiB, t = 2, p = 1 (the benchmark reports them).
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFC", password)


def hash_password(password: str) -> str:
    """Argon2id hash (PHC string, salt included) of `password`."""
    return HASHER.hash(_normalise(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`; never raises, a malformed hash simply does not match."""
    try:
        return HASHER.verify(password_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError is a VerificationError; InvalidHashError covers a corrupt stored value.
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters (rehash it after the next successful login)."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


# Verified against when the login names no known account, so an unknown user costs the same time as a
# wrong password and response times do not reveal which e-mails have accounts. Its password is random and
# discarded: nothing can ever match it.
DUMMY_HASH: str = hash_password(secrets.token_urlsafe(32))

# ----------------------------------------------------------------- policy

MIN_LENGTH = 12
MAX_LENGTH = 128  # bounds hashing work per request and still allows long passphrases
PASSWORD_HISTORY = 5  # callers pass the hashes of the last PASSWORD_HISTORY passwords
# Username fragments shorter than this are ignored: "jo" or "a" would forbid half the dictionary.
_MIN_USERNAME_FRAGMENT = 3
DENY_LIST_RESOURCE = "common_passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The bundled deny-list (casefolded), read from the package on first use only."""
    text = resources.files(__package__ or "cdap_identity").joinpath(DENY_LIST_RESOURCE).read_text("utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip())


def _username_fragments(username: str) -> set[str]:
    name = username.strip().casefold()
    fragments = {name}
    if "@" in name:
        fragments.add(name.rpartition("@")[0])
    return {f for f in fragments if len(f) >= _MIN_USERNAME_FRAGMENT}


def _length_violations(password: str) -> list[str]:
    length = len(password)
    if length < MIN_LENGTH:
        return [f"The password must be at least {MIN_LENGTH} characters long (it has {length})."]
    if length > MAX_LENGTH:
        return [f"The password must be at most {MAX_LENGTH} characters long (it has {length})."]
    return []


def check_policy(password: str, *, username: str, previous_hashes: Sequence[str]) -> list[str]:
    """Human-readable reasons why `password` is refused; an empty list means it is acceptable.

    `previous_hashes` are the hashes of the account's last PASSWORD_HISTORY passwords (every one given is
    checked). All violations are reported at once so the user can fix them in one go.
    """
    password = _normalise(password)
    violations = _length_violations(password)
    folded = password.casefold()
    if any(fragment in folded for fragment in _username_fragments(username)):
        violations.append("The password must not contain your username or e-mail address.")
    if folded in common_passwords():
        violations.append("This password is too common; choose one that is harder to guess.")
    if any(verify_password(h, password) for h in previous_hashes):
        violations.append(f"The password must differ from your last {PASSWORD_HISTORY} passwords.")
    return violations


# ----------------------------------------------------------------- TOTP

TOTP_DIGITS = 6
TOTP_PERIOD = 30  # seconds, the RFC 6238 default every authenticator app uses
TOTP_VALID_WINDOW = 1  # one step either side: tolerates ~30 s of clock drift or typing time
_TOTP_CODE = re.compile(r"[0-9]{6}")


def new_totp_secret() -> str:
    """A fresh random base32 TOTP secret (160 bits)."""
    return pyotp.random_base32()


def otpauth_uri(secret: str, account_email: str, issuer: str = "CDAP") -> str:
    """`otpauth://` URI for enrolment (rendered as a QR code by the portal)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account_email, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The QR code of an `otpauth://` URI as an inline SVG element (no XML declaration), for a web page."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, border=4, light="#fff", title="CDAP TOTP"))


def totp_step(now: datetime) -> int:
    """The TOTP time step containing `now` (which must be timezone-aware)."""
    if now.tzinfo is None:
        # A naive datetime would be read as local time and shift every code by the UTC offset.
        raise ValueError("now must be timezone-aware")
    return int(now.timestamp()) // TOTP_PERIOD


def verify_totp(secret: str, code: str, now: datetime, last_used_step: int | None) -> int | None:
    """The time step `code` belongs to if it is valid at `now`, else None.

    Steps at or before `last_used_step` are refused, so a code (or an older one) cannot be replayed; the
    caller stores the returned step as the new `last_used_step`.
    """
    if not _TOTP_CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
    current = totp_step(now)
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


# ----------------------------------------------------------------- one-time tokens


def new_token() -> str:
    """A random one-time token (activation link, refresh token): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a token: what is stored, so a database leak does not leak usable tokens.

    A plain hash suffices (no salt, no argon2): the tokens carry 256 random bits and cannot be guessed.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
