"""Leaves, proofs and checkpoints served over HTTP, checked against an independent RFC 9162 transcription."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.tlog.checkpoint import Checkpoint, NoteVerifier, open_note
from cdap_testing import eventually

from . import rfc9162
from .conftest import Audit, consulted, suspended

pytestmark = pytest.mark.stack


def b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


async def fill(audit: Audit, n: int) -> list[dict[str, Any]]:
    events = [consulted(f"u{i % 3}", f"{2000000 + i:07d}") if i % 2 else suspended(f"s{i}") for i in range(n)]
    await audit.publish(*events)
    return await audit.wait_for_entries(n)


async def test_served_leaf_bytes_hash_to_the_stored_leaf_and_match_the_fields(audit: Audit) -> None:
    items = await fill(audit, 12)
    stored = {
        r["idx"] * 256 + i // 32: bytes(r["hashes"][i : i + 32])
        for r in await audit.sql("SELECT idx, hashes FROM merkle_tile WHERE level = 0")
        for i in range(0, len(r["hashes"]), 32)
    }
    for item in items:
        raw = base64.b64decode(item["leaf"])
        assert rfc9162.leaf(raw) == stored[item["index"]]
        document = json.loads(raw)
        # canonical: sorted keys, no spaces, UTF-8
        assert raw == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert document["event_id"] == item["event_id"] and document["event_type"] == item["type"]
        for name in ("actor", "subject", "decision", "reason", "motif", "trace_id", "time"):
            assert document[name] == item[name], name


async def test_inclusion_proofs_verify_with_the_reference(audit: Audit) -> None:
    items = await fill(audit, 21)
    leaves = [base64.b64decode(i["leaf"]) for i in items]
    for size in (1, 2, 3, 7, 8, 13, 21):
        root = rfc9162.mth(leaves[:size])
        for index in range(size):
            body = await audit.get("/v1/proofs/inclusion", index=index, tree_size=size)
            assert (body["index"], body["tree_size"]) == (index, size)
            hashes = b64(body["hashes"])
            assert hashes == rfc9162.path(index, leaves[:size]), (index, size)
            assert rfc9162.verify_inclusion(rfc9162.leaf(leaves[index]), index, size, hashes, root)
            assert not rfc9162.verify_inclusion(rfc9162.leaf(b"forged"), index, size, hashes, root)


async def test_consistency_proofs_verify_with_the_reference(audit: Audit) -> None:
    items = await fill(audit, 19)
    leaves = [base64.b64decode(i["leaf"]) for i in items]
    for second in (1, 4, 5, 11, 16, 19):
        for first in range(1, second + 1):
            body = await audit.get("/v1/proofs/consistency", first=first, second=second)
            hashes = b64(body["hashes"])
            expected = [] if first == second else rfc9162.proof(first, leaves[:second])
            assert hashes == expected, (first, second)
            assert rfc9162.verify_consistency(
                first, second, rfc9162.mth(leaves[:first]), rfc9162.mth(leaves[:second]), hashes
            ), (first, second)
    empty = await audit.get("/v1/proofs/consistency", first=0, second=19)
    assert empty["hashes"] == []


async def latest(audit: Audit) -> dict[str, Any]:
    response = await audit.client.get(
        "/v1/checkpoints/latest", headers=audit.headers() | {"Accept": "application/json"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def raw_signature_check(note: str, verifier_key: str) -> bool:
    """The signed-note check done by hand with `cryptography`: key id, then Ed25519 over the text."""
    name, key_id, key_b64 = verifier_key.split("+", 2)
    key = base64.b64decode(key_b64)
    text, _, signatures = note.rpartition("\n\n")
    line = signatures.strip().removeprefix("\u2014 ")
    signer, blob = line.split(" ")
    raw = base64.b64decode(blob)
    if signer != name or raw[:4].hex() != key_id:
        return False
    Ed25519PublicKey.from_public_bytes(key[1:]).verify(raw[4:], (text + "\n").encode())
    return True


async def test_checkpoints_are_signed_grow_and_are_announced(audit: Audit) -> None:
    key_response = await audit.client.get("/v1/checkpoints/key", headers=audit.headers())
    assert key_response.status_code == 200 and key_response.headers["content-type"].startswith("text/plain")
    verifier_key = key_response.text.strip()
    verifier = NoteVerifier.from_key(verifier_key)

    items = await fill(audit, 5)
    first = await eventually(lambda: _at_least(audit, 5))
    text = await audit.client.get("/v1/checkpoints/latest", headers=audit.headers())
    assert text.headers["content-type"].startswith("text/plain")
    checkpoint = Checkpoint.parse(open_note(text.text, verifier))
    assert checkpoint.origin == audit.settings.audit_origin == first["origin"]
    assert raw_signature_check(first["note"], verifier_key)
    leaves = [base64.b64decode(i["leaf"]) for i in items]
    assert base64.b64decode(first["root_hash"]) == rfc9162.mth(leaves[: first["tree_size"]])

    await audit.publish(*[suspended(f"more{i}") for i in range(4)])
    second = await eventually(lambda: _at_least(audit, 9))
    assert second["tree_size"] == 9 > first["tree_size"]
    Checkpoint.parse(open_note(second["note"], verifier))

    announced = await audit.outbox("audit.checkpoint.signed")
    notes = {ev.CheckpointSigned.model_validate(e.data).tree_size: e for e in announced}
    assert {0, 5, 9} <= set(notes)  # the empty tree at start, then each growth
    assert ev.CheckpointSigned.model_validate(notes[9].data).note == second["note"]
    assert await _on_kafka(audit, notes[9].id)


async def _at_least(audit: Audit, size: int) -> dict[str, Any] | None:
    body = await latest(audit)
    return body if body["tree_size"] >= size else None


async def _on_kafka(audit: Audit, event_id: str) -> bool:
    consumer = AIOKafkaConsumer(
        audit.settings.checkpoints_topic,
        bootstrap_servers=audit.settings.kafka_bootstrap,
        **KafkaLogin.from_env().options(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        for _ in range(100):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                if any(CloudEvent.from_bytes(r.value).id == event_id for r in records):
                    return True
        return False
    finally:
        await consumer.stop()
