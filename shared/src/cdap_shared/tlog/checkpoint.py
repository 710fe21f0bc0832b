"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and Ed25519 signed notes (c2sp.org/signed-note).

A checkpoint is the note text ``origin\\nsize\\nbase64(root)\\n``; a signed note appends a blank line and
one ``— <key name> <base64(key ID || signature)>`` line per signature. The byte layout and the key string
formats are those of Go's ``golang.org/x/mod/sumdb/note``, so standard tlog tooling (witnesses, monitors)
can verify our checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT_HASH_SIZE = 32
"""Checkpoint root hashes are RFC 6962 SHA-256 tree heads."""

ED25519_TYPE = 0x01
"""signed-note signature type identifier for Ed25519."""

MAX_SIGNATURES = 100
"""Signature lines accepted per note (the spec requires at least 16; Go's reference uses 100)."""

_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII digits, no leading zeros (str.isdecimal allows e.g. '٣')
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_ED25519_SIG_SIZE = 64


class NoteError(Exception):
    """A signed note could not be opened: malformed, unverified, or carrying a bad signature."""


class MalformedNoteError(NoteError):
    """The note does not follow the signed-note syntax."""


class UnverifiedNoteError(NoteError):
    """The note is well-formed but carries no signature from any of the trusted keys."""


class InvalidSignatureError(NoteError):
    """A trusted key's signature line is present but does not verify: the note was tampered with."""


# ---- strict encodings ----------------------------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    """Decode standard, padded base64, rejecting anything that is not its canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError(f"invalid base64: {text!r}") from exc
    # b64decode ignores non-zero padding bits; requiring the canonical form keeps one meaning per string.
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError(f"non-canonical base64: {text!r}")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _has_control_chars(text: str) -> bool:
    # signed-note forbids ASCII control characters other than newline anywhere in a note.
    return any(ord(c) < 0x20 and c != "\n" for c in text)


def _check_valid_utf8(text: str) -> None:
    try:
        text.encode("utf-8")  # lone surrogates are the only way a str can fail this
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid UTF-8") from exc


# ---- checkpoints ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash, and (parsed, opaque) extension lines."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if self.tree_size < 0:
            raise ValueError(f"tree size must be >= 0, got {self.tree_size}")
        if len(self.root_hash) != ROOT_HASH_SIZE:
            raise ValueError(f"root hash must be {ROOT_HASH_SIZE} bytes, got {len(self.root_hash)}")
        # Accept any iterable but store a tuple so the dataclass stays hashable and immutable.
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            _check_line(line, "extension line")

    def body(self) -> str:
        """Return the note text: ``origin``, size and base64 root, each followed by a newline.

        We never add extension lines ourselves (the spec discourages them as unauditable), but ones kept
        from :meth:`parse` are written back so a parsed checkpoint serialises to the same text.
        """
        lines = [self.origin, str(self.tree_size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (e.g. from :func:`open_note`); raise ``ValueError`` if malformed."""
        if not text.endswith("\n"):
            raise ValueError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise ValueError(f"checkpoint needs at least 3 lines, got {len(lines)}")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise ValueError(f"tree size is not a canonical decimal number: {size_line!r}")
        try:
            root_hash = _b64decode(root_line)
        except ValueError as exc:
            raise ValueError(f"root hash: {exc}") from exc
        # __post_init__ rejects the remaining problems: empty lines, control characters, hash length.
        return cls(origin, int(size_line), root_hash, tuple(extensions))


def _check_line(line: str, what: str) -> None:
    if not line:
        raise ValueError(f"{what} must not be empty")
    if "\n" in line or _has_control_chars(line):
        raise ValueError(f"{what} must not contain newlines or control characters: {line!r}")
    _check_valid_utf8(line)


# ---- keys ----------------------------------------------------------------------------------------------


def _check_key_name(name: str) -> None:
    # signed-note: non-empty, no Unicode spaces, no '+' (which separates the fields of key strings).
    if not name or "+" in name or any(c.isspace() for c in name):
        raise ValueError(f"invalid key name {name!r}: must be non-empty, without whitespace or '+'")
    if _has_control_chars(name):
        raise ValueError(f"invalid key name {name!r}: control characters")
    _check_valid_utf8(name)


def key_id(name: str, public_key: bytes, key_type: int = ED25519_TYPE) -> int:
    """Return the key ID ``SHA-256(name || 0x0A || key_type || public_key)[:4]`` as a big-endian int."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key(text: str, key_type: int, what: str, material: str) -> tuple[str, int, bytes]:
    """Split ``<name>+<8 hex key ID>+<base64(key_type || 32 bytes)>`` into (name, key ID, 32 bytes)."""
    # Names cannot contain '+', but base64 can: split only the first two separators.
    name, _, rest = text.partition("+")
    hex_id, _, key_b64 = rest.partition("+")
    if not _HEX8.fullmatch(hex_id):
        raise ValueError(f"malformed {what}: expected <name>+<8 hex digits>+<base64 {material}>")
    try:
        key = _b64decode(key_b64)
    except ValueError:  # its message would quote the text, which may be a private key
        raise ValueError(f"malformed {what}: the {material} is not canonical base64") from None
    if len(key) != 33 or key[0] != key_type:
        raise ValueError(f"malformed {what}: only 0x{key_type:02x} (Ed25519) 32-byte keys are supported")
    return name, int(hex_id, 16), key[1:]


def _parse_signer_key(text: str, key_type: int) -> tuple[str, int, bytes]:
    if not text.startswith(_PRIVATE_PREFIX):
        raise ValueError("malformed signer key: expected PRIVATE+KEY+<name>+<hex id>+<base64 seed>")
    return _parse_key(text.removeprefix(_PRIVATE_PREFIX), key_type, "signer key", "seed")


def _check_public_key(name: str, key_hash: int, public_key: bytes, key_type: int) -> None:
    _check_key_name(name)
    if len(public_key) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    if key_hash != key_id(name, public_key, key_type):
        raise ValueError(f"key ID {key_hash:08x} does not match key name and public key")


def _format_key(name: str, key_hash: int, key_type: int, material: bytes) -> str:
    return f"{name}+{key_hash:08x}+{_b64encode(bytes([key_type]) + material)}"


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, key ID and public key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_public_key(self.name, self.key_id, self.public_key, ED25519_TYPE)

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        """Build a verifier from a key name and a raw 32-byte Ed25519 public key."""
        _check_key_name(name)
        return cls(name, key_id(name, public_key), public_key)

    @classmethod
    def from_key(cls, verifier_key: str) -> NoteVerifier:
        """Parse a verifier key string ``<name>+<8 hex key ID>+<base64(0x01 || public key)>``."""
        name, hex_id, public_key = _parse_key(verifier_key, ED25519_TYPE, "verifier key", "public key")
        return cls(name, hex_id, public_key)

    @property
    def key(self) -> str:
        """The verifier key string, as accepted by :meth:`from_key`."""
        return _format_key(self.name, self.key_id, ED25519_TYPE, self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``text``."""
        return len(signature) == _ED25519_SIG_SIZE and _verifies(self.public_key, signature, text)


def _verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


class _PrivateKey:
    """A named Ed25519 private key (of a log or of a witness)."""

    def __init__(self, name: str, seed: bytes) -> None:
        _check_key_name(name)
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = seed
        self.name = name
        self.public_key = _raw_public_key(self._private.public_key())

    @classmethod
    def generate(cls, name: str) -> Self:
        """Create a key with a fresh random seed."""
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())


class NoteSigner(_PrivateKey):
    """An Ed25519 note signing key. Its ``repr`` never shows the private seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        """Create a signer from a key name and a 32-byte Ed25519 seed (RFC 8032 private key)."""
        super().__init__(name, seed)
        self.verifier = NoteVerifier.from_public_key(name, self.public_key)

    @classmethod
    def from_key(cls, signer_key: str) -> NoteSigner:
        """Parse a signer key string ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>``."""
        name, hex_id, seed = _parse_signer_key(signer_key, ED25519_TYPE)
        signer = cls(name, seed)
        # The ID is derived from the public key, so it can only be checked once the key is rebuilt.
        if signer.key_id != hex_id:
            raise ValueError("signer key ID does not match its name and key")
        return signer

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x})"

    @property
    def key_id(self) -> int:
        """The 32-bit key ID carried in every signature."""
        return self.verifier.key_id

    @property
    def verifier_key(self) -> str:
        """The public verifier key string to hand to anyone who checks our notes."""
        return self.verifier.key

    @property
    def signer_key(self) -> str:
        """The private signer key string (secret!), as accepted by :meth:`from_key`."""
        return _PRIVATE_PREFIX + _format_key(self.name, self.key_id, ED25519_TYPE, self._seed)

    def sign(self, text: str) -> str:
        """Return the signed note: ``text``, a blank line, and this key's signature line.

        ``text`` must be non-empty, end in a newline, be valid UTF-8 and contain no control characters
        other than newlines.
        """
        if not text.endswith("\n"):
            raise ValueError("note text must end with a newline")
        if _has_control_chars(text):
            raise ValueError("note text must not contain control characters other than newline")
        _check_valid_utf8(text)
        signature = self._private.sign(text.encode("utf-8"))
        blob = _b64encode(self.key_id.to_bytes(4, "big") + signature)
        return f"{text}\n{_SIG_PREFIX}{self.name} {blob}\n"


# ---- opening notes -------------------------------------------------------------------------------------


def open_note(note: str | bytes, verifiers: NoteVerifier | Iterable[NoteVerifier]) -> str:
    """Verify a signed note and return its text (including the final newline, without the blank line).

    Follows c2sp.org/signed-note and Go's reference ``note.Open``: signatures from keys not in
    ``verifiers`` are ignored, a failing signature from a trusted key rejects the whole note, and at
    least one trusted signature must verify. Raises :class:`NoteError` (one of its subclasses) otherwise.
    """
    if isinstance(verifiers, NoteVerifier):
        verifiers = [verifiers]
    trusted: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        trusted[(v.name, v.key_id)] = v
    text, lines = split_note(note)

    text_bytes = text.encode("utf-8")
    verified: set[tuple[str, int]] = set()
    for line in lines:
        name, key_hash, signature = _parse_signature_line(line)
        verifier = trusted.get((name, key_hash))
        if verifier is None or (name, key_hash) in verified:
            continue  # unknown keys MUST be ignored; a repeated trusted signature adds nothing
        if not verifier.verify(text_bytes, signature):
            raise InvalidSignatureError(f"invalid signature for key {name}+{key_hash:08x}")
        verified.add((name, key_hash))
    if not verified:
        raise UnverifiedNoteError("note has no signature from a trusted key")
    return text


def split_note(note: str | bytes) -> tuple[str, list[str]]:
    """Check a signed note's syntax; return its text (with the final newline) and its signature lines."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("note is not valid UTF-8") from exc
    try:
        _check_valid_utf8(note)
    except ValueError as exc:
        raise MalformedNoteError(str(exc)) from exc
    if _has_control_chars(note):
        raise MalformedNoteError("note contains control characters other than newline")
    # The text may itself contain blank lines: the signatures start after the *last* one.
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not sig_block.endswith("\n"):
        raise MalformedNoteError("note has no signature lines, or its last line lacks a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return text, lines


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    """Split ``— <name> <base64>`` into (name, key ID, signature bytes)."""
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError(f"malformed signature line: {line!r}")
    name, _, blob = line.removeprefix(_SIG_PREFIX).partition(" ")
    try:
        _check_key_name(name)
        raw = _b64decode(blob)
    except ValueError as exc:
        raise MalformedNoteError(f"malformed signature line {line!r}: {exc}") from exc
    if len(raw) < 5:
        raise MalformedNoteError(f"signature too short in line {line!r}")
    return name, int.from_bytes(raw[:4], "big"), raw[4:]


# ---- cosignatures (c2sp.org/tlog-cosignature, Ed25519 cosignature/v1) -----------------------------------

COSIGNATURE_TYPE = 0x04
"""Key ID algorithm byte of Ed25519 cosignature/v1 keys (distinct from 0x01: the signed message differs)."""

_TIMESTAMP_MAX = 2**63 - 1


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosigner signs: a domain header, the time, then the whole checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class CosignerVerifier:
    """A trusted witness's Ed25519 cosigning key (vkey type 0x04)."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_public_key(self.name, self.key_id, self.public_key, COSIGNATURE_TYPE)

    @classmethod
    def from_key(cls, verifier_key: str) -> CosignerVerifier:
        """Parse ``<name>+<8 hex key ID>+<base64(0x04 || public key)>``."""
        name, hex_id, public_key = _parse_key(verifier_key, COSIGNATURE_TYPE, "witness key", "public key")
        return cls(name, hex_id, public_key)

    @property
    def key(self) -> str:
        """The verifier key string, as accepted by :meth:`from_key`."""
        return _format_key(self.name, self.key_id, COSIGNATURE_TYPE, self.public_key)

    def timestamp_of(self, text: str, signature: bytes) -> int | None:
        """The cosignature's time if ``signature`` (timestamp || Ed25519) cosigns ``text``, else None."""
        if len(signature) != 8 + _ED25519_SIG_SIZE:
            return None
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > _TIMESTAMP_MAX:
            return None
        if not _verifies(self.public_key, signature[8:], cosigned_message(text, timestamp)):
            return None
        return timestamp


class Cosigner(_PrivateKey):
    """A witness's Ed25519 cosigning key. Its ``repr`` never shows the private seed."""

    def __init__(self, name: str, seed: bytes) -> None:
        super().__init__(name, seed)
        key_hash = key_id(name, self.public_key, COSIGNATURE_TYPE)
        self.verifier = CosignerVerifier(name, key_hash, self.public_key)

    @classmethod
    def from_key(cls, signer_key: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x04 || seed)>``."""
        name, hex_id, seed = _parse_signer_key(signer_key, COSIGNATURE_TYPE)
        cosigner = cls(name, seed)
        if cosigner.verifier.key_id != hex_id:
            raise ValueError("signer key ID does not match its name and key")
        return cosigner

    def __repr__(self) -> str:
        return f"Cosigner(name={self.name!r}, key_id={self.verifier.key_id:08x})"

    @property
    def signer_key(self) -> str:
        """The private key string (secret!), as accepted by :meth:`from_key`."""
        return _PRIVATE_PREFIX + _format_key(self.name, self.verifier.key_id, COSIGNATURE_TYPE, self._seed)

    def cosign(self, text: str, timestamp: int) -> str:
        """The cosignature line (``— <name> <base64>``, no newline) of checkpoint ``text`` at a time."""
        if not 0 <= timestamp <= _TIMESTAMP_MAX:
            raise ValueError(f"timestamp out of range: {timestamp}")
        signature = self._private.sign(cosigned_message(text, timestamp))
        blob = self.verifier.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big") + signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(blob)}"


def cosignatures(note: str, witnesses: Iterable[CosignerVerifier]) -> dict[CosignerVerifier, str]:
    """The valid cosignature lines of ``note`` by ``witnesses`` (each witness's first line).

    Lines of other keys are ignored, as signed-note requires; a line that names a witness key but
    does not verify is a forgery and raises :class:`InvalidSignatureError`.
    """
    text, lines = split_note(note)
    trusted = {(w.name, w.key_id): w for w in witnesses}
    found: dict[CosignerVerifier, str] = {}
    for line in lines:
        name, key_hash, signature = _parse_signature_line(line)
        witness = trusted.get((name, key_hash))
        if witness is None or witness in found:
            continue
        if witness.timestamp_of(text, signature) is None:
            raise InvalidSignatureError(f"invalid cosignature for witness key {name}+{key_hash:08x}")
        found[witness] = line
    return found
