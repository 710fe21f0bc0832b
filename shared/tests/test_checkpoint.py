"""Tests for cdap_shared.tlog.checkpoint: C2SP tlog-checkpoint bodies and Ed25519 signed notes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdap_shared.tlog.checkpoint import (
    Checkpoint,
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    NoteSigner,
    NoteVerifier,
    UnverifiedNoteError,
    key_id,
    open_note,
)

ORIGIN = "cdap.example/audit"
ROOT = hashlib.sha256(b"some root").digest()
SEED = bytes(range(32))

# Known answer from Go's reference implementation (golang.org/x/mod/sumdb/note documentation and tests):
# Ed25519 is deterministic, so reproducing it byte for byte proves wire compatibility.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n"
    + "\u2014 PeterNeumann "
    + "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner(ORIGIN, SEED)


def checkpoint_text(size: int = 42, root: bytes = ROOT) -> str:
    return Checkpoint(ORIGIN, size, root).body()


# ---- checkpoint bodies -----------------------------------------------------------------------------------


def test_checkpoint_body_layout() -> None:
    body = Checkpoint(ORIGIN, 20852163, ROOT).body()
    assert body == f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint(ORIGIN, 0, ROOT).body().split("\n")[1] == "0"


def test_checkpoint_parse_round_trip_with_extensions() -> None:
    cp = Checkpoint(ORIGIN, 7, ROOT)
    assert Checkpoint.parse(cp.body()) == cp
    text = cp.body() + "ext one\next two\n"
    parsed = Checkpoint.parse(text)
    assert parsed.extensions == ("ext one", "ext two")
    assert (parsed.origin, parsed.tree_size, parsed.root_hash) == (ORIGIN, 7, ROOT)
    assert parsed.body() == text


def test_checkpoint_spec_example_parses() -> None:
    cp = Checkpoint.parse(
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.tree_size == 20852163
    assert len(cp.root_hash) == 32


GOOD_ROOT = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFF]) * 32).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing at all
        f"{ORIGIN}\n42\n",  # missing root line
        f"{ORIGIN}\n42\n{GOOD_ROOT}",  # missing final newline
        f"{ORIGIN}\n",  # only origin
        f"\n42\n{GOOD_ROOT}\n",  # empty origin
        f"{ORIGIN}\n-1\n{GOOD_ROOT}\n",  # negative size
        f"{ORIGIN}\n042\n{GOOD_ROOT}\n",  # leading zero
        f"{ORIGIN}\n4 2\n{GOOD_ROOT}\n",  # not decimal
        f"{ORIGIN}\n0x2a\n{GOOD_ROOT}\n",  # hex
        f"{ORIGIN}\n\u0664\u0662\n{GOOD_ROOT}\n",  # non-ASCII digits
        f"{ORIGIN}\n\n{GOOD_ROOT}\n",  # empty size
        f"{ORIGIN}\n42\nnot base64!\n",  # bad base64 alphabet
        f"{ORIGIN}\n42\n{GOOD_ROOT.rstrip('=')}\n",  # missing padding
        f"{ORIGIN}\n42\n{base64.b64encode(ROOT[:31]).decode()}\n",  # wrong hash length
        f"{ORIGIN}\n42\n{URLSAFE_ROOT}\n",  # URL-safe alphabet
        f"{ORIGIN}\n42\n{GOOD_ROOT}\n\n",  # empty extension line
        f"{ORIGIN}\t\n42\n{GOOD_ROOT}\n",  # control character
    ],
)
def test_checkpoint_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Checkpoint.parse(text)


def test_checkpoint_rejects_invalid_fields() -> None:
    with pytest.raises(ValueError):
        Checkpoint("", 1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(ValueError):
        Checkpoint(ORIGIN, 1, ROOT[:16])
    with pytest.raises(ValueError):
        Checkpoint(ORIGIN, 1, ROOT, ("",))


# ---- keys ------------------------------------------------------------------------------------------------


def test_go_reference_vector_sign_and_open() -> None:
    signer = NoteSigner.from_key(GO_SKEY)
    assert signer.verifier_key == GO_VKEY
    assert signer.signer_key == GO_SKEY
    assert signer.sign(GO_TEXT) == GO_NOTE
    assert open_note(GO_NOTE, NoteVerifier.from_key(GO_VKEY)) == GO_TEXT


def test_key_id_matches_spec_formula(signer: NoteSigner) -> None:
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    expected = hashlib.sha256(ORIGIN.encode() + b"\n" + b"\x01" + public).digest()[:4]
    public_b64 = base64.b64encode(b"\x01" + public).decode()
    seed_b64 = base64.b64encode(b"\x01" + SEED).decode()
    assert signer.key_id == int.from_bytes(expected, "big") == key_id(ORIGIN, public)
    assert signer.verifier_key == f"{ORIGIN}+{expected.hex()}+{public_b64}"
    assert signer.signer_key == f"PRIVATE+KEY+{ORIGIN}+{expected.hex()}+{seed_b64}"


def test_verifier_key_round_trip(signer: NoteSigner) -> None:
    verifier = NoteVerifier.from_key(signer.verifier_key)
    assert verifier == signer.verifier
    assert verifier.key == signer.verifier_key
    assert verifier.name == ORIGIN
    # Upper-case hex IDs are accepted (as by Go's parser) and normalised on output.
    name, hex_id, key = signer.verifier_key.split("+", 2)
    assert NoteVerifier.from_key(f"{name}+{hex_id.upper()}+{key}").key == signer.verifier_key


def test_signer_key_round_trip_and_generate() -> None:
    signer = NoteSigner.generate("log.example/a")
    again = NoteSigner.from_key(signer.signer_key)
    assert again.verifier_key == signer.verifier_key
    assert SEED.hex() not in repr(NoteSigner(ORIGIN, SEED))
    assert "PRIVATE" not in repr(signer)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # truncated base64
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not 0x01 ‖ 32 bytes
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
        GO_SKEY,  # a private key is not a verifier key
    ],
)
def test_verifier_key_rejects_malformed(key: str) -> None:
    with pytest.raises(ValueError):
        NoteVerifier.from_key(key)


@pytest.mark.parametrize(
    "key",
    [
        GO_VKEY,
        GO_SKEY.replace("c74f20a3", "c74f20a4"),
        GO_SKEY.replace("PRIVATE+KEY", "PRIVATE+KYE"),
        GO_SKEY[:-2],
    ],
)
def test_signer_key_rejects_malformed(key: str) -> None:
    with pytest.raises(ValueError):
        NoteSigner.from_key(key)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0x", "line\nbreak"])
def test_key_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        NoteSigner(name, SEED)


# ---- signing and opening ---------------------------------------------------------------------------------


def test_sign_open_round_trip(signer: NoteSigner) -> None:
    text = checkpoint_text()
    note = signer.sign(text)
    opened = open_note(note, NoteVerifier.from_key(signer.verifier_key))
    assert opened == text
    assert Checkpoint.parse(opened) == Checkpoint(ORIGIN, 42, ROOT)
    assert open_note(note.encode("utf-8"), [signer.verifier]) == text


def test_exact_note_layout(signer: NoteSigner) -> None:
    text = checkpoint_text()
    note = signer.sign(text)
    signature = Ed25519PrivateKey.from_private_bytes(SEED).sign(text.encode())
    blob = base64.b64encode(signer.key_id.to_bytes(4, "big") + signature).decode()
    assert note == f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n\n\u2014 {ORIGIN} {blob}\n"
    assert note.encode("utf-8").count(b"\xe2\x80\x94 ") == 1  # U+2014 EM DASH then a space
    body, sep, sig_line = note.rpartition("\n\n")
    assert (body + "\n", sep, sig_line) == (text, "\n\n", f"\u2014 {ORIGIN} {blob}\n")


def test_modified_body_fails(signer: NoteSigner) -> None:
    note = signer.sign(checkpoint_text(size=42))
    verifier = signer.verifier
    tampered_size = note.replace("\n42\n", "\n43\n", 1)
    with pytest.raises(InvalidSignatureError):
        open_note(tampered_size, verifier)
    other_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    tampered_root = note.replace(base64.b64encode(ROOT).decode(), other_root, 1)
    with pytest.raises(InvalidSignatureError):
        open_note(tampered_root, verifier)


def test_signature_by_another_key_fails(signer: NoteSigner) -> None:
    # Same name, different key: the key ID differs, so the signature is from an unknown key.
    impostor = NoteSigner(ORIGIN, bytes(32))
    with pytest.raises(UnverifiedNoteError):
        open_note(impostor.sign(checkpoint_text()), signer.verifier)
    # Same name and forged key ID, different key: the signature itself must fail.
    text = checkpoint_text()
    forged_sig = Ed25519PrivateKey.from_private_bytes(bytes(32)).sign(text.encode())
    blob = base64.b64encode(signer.key_id.to_bytes(4, "big") + forged_sig).decode()
    with pytest.raises(InvalidSignatureError):
        open_note(f"{text}\n\u2014 {ORIGIN} {blob}\n", signer.verifier)


def test_unknown_key_name_fails(signer: NoteSigner) -> None:
    other = NoteSigner("someone.else/log", SEED)
    with pytest.raises(UnverifiedNoteError):
        open_note(other.sign(checkpoint_text()), signer.verifier)
    with pytest.raises(UnverifiedNoteError):
        open_note(signer.sign(checkpoint_text()), [])


def test_unknown_signatures_are_ignored_alongside_a_trusted_one(signer: NoteSigner) -> None:
    text = checkpoint_text()
    witness = NoteSigner("witness.example/w1", bytes([7]) * 32)
    cosigned = signer.sign(text) + witness.sign(text).rpartition("\n\n")[2]
    assert open_note(cosigned, signer.verifier) == text
    assert open_note(cosigned, witness.verifier) == text
    assert open_note(cosigned, [signer.verifier, witness.verifier]) == text
    # A repeated signature line from a trusted key is harmless.
    assert open_note(cosigned + signer.sign(text).rpartition("\n\n")[2], signer.verifier) == text


def test_text_may_contain_blank_lines(signer: NoteSigner) -> None:
    text = "first\n\nsecond\n"
    assert open_note(signer.sign(text), signer.verifier) == text


def _sig_line(signer: NoteSigner, text: str) -> str:
    return signer.sign(text).rpartition("\n\n")[2]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda text, line: text,  # no signature block at all
        lambda text, line: text + "\n",  # blank line but no signature
        lambda text, line: text + line,  # no blank line before the signature
        lambda text, line: text + "\n" + line.rstrip("\n"),  # signature line without newline
        lambda text, line: text + "\n" + line.replace("\u2014", "-"),  # hyphen instead of em dash
        lambda text, line: text + "\n" + line.replace("\u2014 ", "\u2014"),  # no space after dash
        lambda text, line: text + "\n" + line[:-3] + "!\n",  # bad base64
        lambda text, line: text + "\n" + line.split(" ")[0] + " " + line.split(" ")[1] + " AAAA\n",  # short
        lambda text, line: text + "\n" + line + "\n",  # trailing blank line
        lambda text, line: text.replace("\n", "\r\n", 1) + "\n" + line,  # control character
        lambda text, line: text + "\n" + line + "garbage\n",  # non-signature line after signatures
    ],
)
def test_malformed_notes_are_rejected(signer: NoteSigner, mangle: Callable[[str, str], str]) -> None:
    text = checkpoint_text()
    note = mangle(text, _sig_line(signer, text))
    with pytest.raises(MalformedNoteError):
        open_note(note, signer.verifier)


def test_note_errors_share_a_base_class(signer: NoteSigner) -> None:
    for bad in ("", "x\n", b"\xff\xfe\n\n"):
        with pytest.raises(NoteError):
            open_note(bad, signer.verifier)


def test_too_many_signatures_rejected(signer: NoteSigner) -> None:
    text = checkpoint_text()
    line = _sig_line(NoteSigner("w.example/x", bytes([9]) * 32), text)
    with pytest.raises(MalformedNoteError):
        open_note(signer.sign(text) + line * 100, signer.verifier)
    assert open_note(signer.sign(text) + line * 15, signer.verifier) == text  # spec: accept >= 16


@pytest.mark.parametrize("text", ["no newline", "tab\tinside\n", "bell\x07\n", "surrogate \udc80\n"])
def test_sign_rejects_invalid_text(signer: NoteSigner, text: str) -> None:
    with pytest.raises(ValueError):
        signer.sign(text)
