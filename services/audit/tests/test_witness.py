"""Proof to a third party: the signing key kept outside the database, and a witness's cosignatures.

The witness (`cdap audit witness`, its own key and state) cosigns checkpoints that extend what it
cosigned before, refuses a rewritten log, and `cdap audit verify --witness-key` requires its
cosignature (c2sp.org/tlog-cosignature).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from cdap_audit import merkle
from cdap_audit.app import build
from cdap_audit.client import AuditClient
from cdap_audit.config import Settings
from cdap_audit.signing import SigningKeyError
from cdap_audit.verify import SavedCheckpoint, fetch_checkpoint, verify_log
from cdap_audit.witness import Refused, Witness, WitnessState, check
from cdap_shared.tlog.checkpoint import (
    Checkpoint,
    Cosigner,
    CosignerVerifier,
    InvalidSignatureError,
    NoteSigner,
    NoteVerifier,
    cosignatures,
    key_id,
    open_note,
)
from cdap_testing import eventually

from .conftest import Audit, consulted, serve
from .test_cli import _signed, cdap, grow_to, token, verify

LOG = NoteSigner("cdap.audit/test", bytes(range(32)))
WITNESS = Cosigner("witness.example/w1", bytes([7]) * 32)


def leaves(n: int, salt: str = "") -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}{i}".encode()) for i in range(n)]


def signed(hashes: list[bytes]) -> str:
    return LOG.sign(Checkpoint(LOG.name, len(hashes), merkle.root_from_leaves(hashes)).body())


def proofs(hashes: list[bytes]) -> Callable[[int, int], list[bytes]]:
    store = merkle.MemoryStore()
    merkle.append_leaves(store, 0, hashes)
    return lambda first, second: merkle.consistency_proof(store, first, second)


# ---- cosignature format ---------------------------------------------------------------------------------


def test_cosignature_signs_the_spec_message_with_a_type_4_key_id() -> None:
    text = Checkpoint("example.com/behind-the-sofa", 20852163, bytes(32)).body()
    line = WITNESS.cosign(text, 1679315147)
    name, _, blob = line.removeprefix("\u2014 ").partition(" ")
    raw = base64.b64decode(blob)
    public_key = WITNESS.verifier.public_key
    assert name == "witness.example/w1"
    assert int.from_bytes(raw[:4], "big") == key_id(name, public_key, 0x04) != key_id(name, public_key)
    assert int.from_bytes(raw[4:12], "big") == 1679315147 and len(raw) == 4 + 8 + 64
    message = b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n" + (
        base64.b64encode(bytes(32)) + b"\n"
    )
    # Checked with the raw public key, independently of our verifier class.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(public_key).verify(raw[12:], message)


def test_cosignatures_are_found_verified_and_forgeries_refused() -> None:
    note = signed(leaves(3))
    text = open_note(note, LOG.verifier)
    line = WITNESS.cosign(text, 1_700_000_000)
    cosigned = f"{note}{line}\n"
    assert open_note(cosigned, LOG.verifier) == text  # the log's signature still verifies
    assert cosignatures(cosigned, [WITNESS.verifier]) == {WITNESS.verifier: line}
    other = Cosigner.generate("witness.example/w2")
    assert cosignatures(cosigned, [other.verifier]) == {}  # another witness's key: not there
    impostor = Cosigner(WITNESS.name, bytes([8]) * 32)  # same name, another key: another key ID
    assert cosignatures(f"{note}{impostor.cosign(text, 1)}\n", [WITNESS.verifier]) == {}
    forged = WITNESS.cosign(Checkpoint(LOG.name, 4, bytes(32)).body(), 1)  # cosigns another tree
    with pytest.raises(InvalidSignatureError):
        cosignatures(f"{note}{forged}\n", [WITNESS.verifier])


def test_witness_keys_round_trip_and_are_not_log_keys() -> None:
    assert Cosigner.from_key(WITNESS.signer_key).verifier == WITNESS.verifier
    assert CosignerVerifier.from_key(WITNESS.verifier.key) == WITNESS.verifier
    assert WITNESS.signer_key not in repr(WITNESS)
    with pytest.raises(ValueError, match="0x04"):
        CosignerVerifier.from_key(LOG.verifier_key)
    with pytest.raises(ValueError, match="0x01"):
        NoteSigner.from_key(WITNESS.signer_key)


# ---- the witness's decision -----------------------------------------------------------------------------


def state_of(hashes: list[bytes]) -> WitnessState:
    root = base64.b64encode(merkle.root_from_leaves(hashes)).decode()
    return WitnessState(LOG.name, LOG.verifier_key, len(hashes), root)


def test_the_witness_accepts_extensions_and_refuses_anything_else() -> None:
    history = leaves(40)
    assert check(signed(history[:7]), LOG.verifier, None, proofs(history)).tree_size == 7  # first: on trust
    assert check(signed(history), LOG.verifier, state_of(history[:7]), proofs(history)).tree_size == 40
    assert check(signed(history[:7]), LOG.verifier, state_of(history[:7]), proofs(history)).tree_size == 7

    fork = history[:5] + leaves(35, salt="forged")
    with pytest.raises(Refused, match="does not extend tree 7 cosigned before: the log was rewritten"):
        check(signed(fork), LOG.verifier, state_of(history[:7]), proofs(fork))
    with pytest.raises(Refused, match="two different roots for tree size 7"):
        check(signed(fork[:7]), LOG.verifier, state_of(history[:7]), proofs(fork))
    with pytest.raises(Refused, match="the log shrank: 6 entries, 7 cosigned before"):
        check(signed(history[:6]), LOG.verifier, state_of(history[:7]), proofs(history))
    stranger = NoteSigner.generate(LOG.name)
    note = stranger.sign(Checkpoint(LOG.name, 40, merkle.root_from_leaves(history)).body())
    with pytest.raises(Refused, match="not signed by the log's key"):
        check(note, LOG.verifier, state_of(history[:7]), proofs(history))


# ---- the signing key outside the database ----------------------------------------------------------------


def test_a_bad_key_file_or_witness_key_stops_the_service_without_showing_the_key(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot be read"):
        build(Settings(audit_signing_key_file=tmp_path / "absent"))
    secret = tmp_path / "key"
    secret.write_text("PRIVATE+KEY+x+00000000+AQID\n")
    with pytest.raises(SigningKeyError, match="KEY_FILE") as caught:
        build(Settings(audit_signing_key_file=secret))
    assert "AQID" not in str(caught.value)
    with pytest.raises(SigningKeyError, match="not both"):
        build(Settings(audit_signing_key_file=secret, audit_signing_key=SecretStr(LOG.signer_key)))
    with pytest.raises(SigningKeyError, match="CDAP_AUDIT_WITNESS_KEYS"):
        build(Settings(audit_witness_keys=[LOG.verifier_key]))


@pytest.mark.stack
async def test_a_key_file_signs_and_no_key_is_stored(
    audit_factory: Callable[..., Awaitable[Audit]], tmp_path: Path
) -> None:
    secret = tmp_path / "signing.key"
    secret.write_text(LOG.signer_key + "\n")
    audit = await audit_factory(audit_signing_key_file=secret, audit_origin=LOG.name)
    note = await eventually(lambda: _latest(audit))
    assert Checkpoint.parse(open_note(note, LOG.verifier)).origin == LOG.name
    assert await audit.sql("SELECT 1 FROM signing_key") == []


async def _latest(audit: Audit) -> str | None:
    response = await audit.client.get("/v1/checkpoints/latest", headers=audit.headers())
    return response.text if response.status_code == 200 else None


# ---- end to end: service, witness process, verify ------------------------------------------------------


@pytest.mark.stack
async def test_the_witness_cosigns_a_growing_log_and_refuses_a_rewritten_one(
    audit_factory: Callable[..., Awaitable[Audit]], tmp_path: Path
) -> None:
    audit = await audit_factory(audit_witness_keys=[WITNESS.verifier.key])
    state, saved = tmp_path / "witness.json", tmp_path / "saved.json"
    witness_key = ["--witness-key", WITNESS.verifier.key]
    await grow_to(audit, 10)
    async with serve(audit.app) as url:
        log_key = (await audit.client.get("/v1/checkpoints/key", headers=audit.headers())).text.strip()
        client = AuditClient(url, token(audit))
        witness = Witness(client, WITNESS, NoteVerifier.from_key(log_key), state)
        # Rounds run in-process here (a `cdap` start costs seconds on a loaded machine); the refusal
        # below runs the real command.
        assert (await asyncio.to_thread(witness.round)).tree_size == 10
        served = await _latest(audit)
        assert served is not None and cosignatures(served, [WITNESS.verifier])
        assert open_note(served, NoteVerifier.from_key(log_key))  # the log's signature is still there
        checkpoint = await asyncio.to_thread(fetch_checkpoint, client, [WITNESS.verifier])
        checkpoint.save(saved)

        # The log grows: the witness checks the consistency proof and cosigns again.
        await grow_to(audit, 20, start=10)
        assert (await asyncio.to_thread(witness.round)).tree_size == 20
        code, out = await verify(url, saved, token(audit), *witness_key, "--entry", "15")
        assert code == 0 and "(size 20) is cosigned by witness.example/w1" in out, out

        # Someone with write access to the database rebuilds the tree from entry 12 on, and the
        # service (whose key is in that database) signs the new tree.
        await audit.roll_back(12)
        await audit.publish(*[consulted("rewritten", f"{4000000 + i}") for i in range(13)])
        await eventually(lambda: _signed(audit, 25), within=30)

        key_file = tmp_path / "witness.key"
        key_file.write_text(WITNESS.signer_key + "\n")
        code, out = await cdap(
            "audit", "witness", "--once", "--log-key", log_key, "--state", str(state),
            "--key-file", str(key_file), "--url", url, token=token(audit),
        )  # fmt: skip
        assert code == 1 and "refusing to cosign" in out and "the log was rewritten" in out, out
        assert json.loads(state.read_text())["tree_size"] == 20  # its memory is untouched
        served = await _latest(audit)
        assert served is not None and not cosignatures(served, [WITNESS.verifier])

        code, out = await verify(url, saved, token(audit), *witness_key, "--witness-wait", "1")
        assert code == 1 and "covers the log's size 25" in out, out
        # Without the witness, the saved checkpoint (10 entries, before the rewritten part) cannot tell.
        loaded = SavedCheckpoint.load(saved)
        assert await asyncio.to_thread(verify_log, client, loaded, None)
        client.http.close()


@pytest.mark.stack
async def test_cosignature_submissions_and_forged_cosignatures(
    audit_factory: Callable[..., Awaitable[Audit]], tmp_path: Path
) -> None:
    audit = await audit_factory(audit_witness_keys=[WITNESS.verifier.key])
    await grow_to(audit, 3)
    note = await _latest(audit)
    assert note is not None
    text = note.rpartition("\n\n")[0] + "\n"
    stranger = Cosigner.generate("witness.example/w9")
    other_text = Checkpoint("cdap.audit/local", 3, bytes(32)).body()
    wrong = {
        "not a note": (400, "hello"),
        "no configured witness": (403, f"{note}{stranger.cosign(text, 1)}\n"),
        "forged": (403, f"{note}{WITNESS.cosign(other_text, 1)}\n"),
        "never signed here": (404, f"{other_text}\n{WITNESS.cosign(other_text, 1)}\n"),
        "too large": (413, "x" * 70_000),
    }
    for what, (status, body) in wrong.items():
        response = await audit.client.post("/v1/checkpoints/cosignatures", content=body.encode())
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"] == "application/problem+json", what
    assert await _latest(audit) == note  # nothing was added

    line = WITNESS.cosign(text, 1_800_000_000)
    for _ in range(2):  # a resubmission adds nothing
        response = await audit.client.post("/v1/checkpoints/cosignatures", content=f"{note}{line}\n")
        assert response.status_code == 200 and response.text == f"{note}{line}\n", response.text
    json_please = audit.headers() | {"Accept": "application/json"}
    response = await audit.client.get("/v1/checkpoints/witnessed", headers=json_please)
    witnessed = response.json()
    assert witnessed["tree_size"] == 3 and witnessed["note"] == f"{note}{line}\n"

    # The cosignature line replaced in the database by one the witness never made.
    saved = tmp_path / "saved.json"
    forged = WITNESS.cosign(other_text, 1_800_000_000)
    await audit.sql("UPDATE checkpoint SET note = replace(note, $1, $2)", line, forged)
    response = await audit.client.post("/v1/checkpoints/cosignatures", content=f"{text}\n{line}\n")
    assert response.status_code == 200 and forged in response.text  # added, the forgery left in sight
    async with serve(audit.app) as url:
        with AuditClient(url, token(audit)) as client:
            (await asyncio.to_thread(fetch_checkpoint, client)).save(saved)
        code, out = await verify(url, saved, token(audit), "--witness-key", WITNESS.verifier.key)
        assert code == 1 and "forged cosignature" in out, out
