"""Auditor pages against a fake audit API that serves a real log: three entries, a checkpoint signed with
a real key, real inclusion proofs. The entry page checks the proof itself and says what it found."""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Any

import httpx

from cdap_audit import merkle
from cdap_shared.tlog.checkpoint import Checkpoint, NoteSigner

from .conftest import AUDITOR, PortalClient

FIELDS = {
    "event_id": "e", "type": "dossier.consulted", "time": "2026-11-30T10:00:00+00:00", "actor": "u-1",
    "organisation_id": "org-1", "profile": "T1", "subject": "7600101", "decision": "granted", "reason": None,
    "motif": "accompagnement_social", "sections": ["identite"], "client_ip": None, "trace_id": "t",
}  # fmt: skip
SERVED_AS = {"type": "event_type"}  # the hashed leaf names `type` `event_type`


def log(size: int, signed: int, tamper: int | None = None) -> tuple[list[dict[str, Any]], MemoryLog]:
    entries, leaves = [], []
    for index in range(size):
        fields = {**FIELDS, "event_id": f"e-{index}", "subject": f"760010{index}"}
        leaf = json.dumps({SERVED_AS.get(k, k): v for k, v in fields.items()}, sort_keys=True).encode()
        leaves.append(leaf)
        served = {**fields, "index": index, "leaf": base64.b64encode(leaf).decode()}
        if index == tamper:
            served["subject"] = "9999999"  # what the API shows differs from what was hashed
        entries.append(served)
    return entries, MemoryLog(leaves, signed)


class MemoryLog:
    def __init__(self, leaves: list[bytes], signed: int) -> None:
        self.store = merkle.MemoryStore()
        merkle.append_leaves(self.store, 0, [merkle.leaf_hash(leaf) for leaf in leaves])
        self.signer = NoteSigner.generate("cdap.test/audit")
        root = merkle.root(self.store, signed)
        self.signed = signed
        self.note = self.signer.sign(Checkpoint("cdap.test/audit", signed, root).body())
        self.root = base64.b64encode(root).decode()

    def proof(self, request: httpx.Request) -> httpx.Response:
        index, size = int(request.url.params["index"]), int(request.url.params["tree_size"])
        hashes = [base64.b64encode(h).decode() for h in merkle.inclusion_proof(self.store, index, size)]
        return httpx.Response(200, json={"index": index, "tree_size": size, "hashes": hashes})


def serve(portal: PortalClient, entries: list[dict[str, Any]], memory: MemoryLog) -> None:
    for entry in entries:
        portal.fakes.on("audit", "GET", f"/v1/entries/{entry['index']}", httpx.Response(200, json=entry))
    checkpoint = {
        "origin": "cdap.test/audit",
        "tree_size": memory.signed,
        "root_hash": memory.root,
        "note": memory.note,
    }
    portal.fakes.on("audit", "GET", "/v1/checkpoints/latest", httpx.Response(200, json=checkpoint))
    portal.fakes.on(
        "audit", "GET", "/v1/checkpoints/key", httpx.Response(200, text=memory.signer.verifier_key + "\n")
    )
    portal.fakes.on("audit", "GET", "/v1/proofs/inclusion", memory.proof)


def outcome(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    marker = 'data-outcome="'
    return page.text.split(marker, 1)[1].split('"', 1)[0]


async def test_an_entry_in_the_signed_tree_is_verified_and_its_proof_downloads(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    entries, memory = log(3, signed=3)
    serve(portal, entries, memory)
    page = await portal.client.get("/audit/entrees/1")
    assert outcome(page) == "verified" and "3 entrées" in page.text and memory.root in page.text

    proof = await portal.client.get("/audit/entrees/1/preuve.json")
    assert proof.status_code == 200 and "attachment" in proof.headers["content-disposition"]
    body = proof.json()
    assert body["entry"]["index"] == 1 and body["checkpoint"]["note"] == memory.note
    assert body["verifier_key"] == memory.signer.verifier_key and len(body["inclusion_proof"]) == 2


async def test_an_altered_entry_or_a_forged_checkpoint_fails_and_a_new_one_is_pending(
    portal: PortalClient,
) -> None:
    await portal.login(AUDITOR)
    entries, memory = log(3, signed=2, tamper=0)
    serve(portal, entries, memory)
    assert outcome(await portal.client.get("/audit/entrees/0")) == "failed"  # served fields differ
    assert outcome(await portal.client.get("/audit/entrees/1")) == "verified"
    assert outcome(await portal.client.get("/audit/entrees/2")) == "pending"  # after the checkpoint

    # A checkpoint signed by another key than the log's: nothing verifies.
    other = NoteSigner.generate("cdap.test/audit")
    portal.fakes.on("audit", "GET", "/v1/checkpoints/key", httpx.Response(200, text=other.verifier_key))
    page = await portal.client.get("/audit/entrees/1")
    assert outcome(page) == "failed" and "not signed by key" in page.text


async def test_a_search_and_a_dossier_consultations_export_as_csv(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    entries, _ = log(3, signed=3)
    pages = {
        None: {"items": entries[:2], "next_cursor": "1"},
        "1": {"items": entries[2:], "next_cursor": None},
    }

    def listing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    portal.fakes.on("audit", "GET", "/v1/entries", listing)
    exported = await portal.client.get("/audit/export.csv", params={"dossier": "7600101"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert [r["index"] for r in rows] == ["0", "1", "2"] and rows[0]["sections"] == "identite"
    asked = [c.request.url.params for c in portal.fakes.made("audit")]
    assert all(p["dossier"] == "7600101" for p in asked) and len(asked) == 2

    portal.fakes.on("audit", "GET", "/v1/dossiers/7600101/consultations", listing)
    consultations = await portal.client.get("/audit/consultations.csv", params={"numero": "7600101"})
    assert (
        consultations.status_code == 200
        and "cdap-consultations-7600101.csv" in consultations.headers["content-disposition"]
    )
    bad = await portal.client.get("/audit/consultations.csv", params={"numero": "12"})
    assert bad.status_code == 400


async def test_before_any_checkpoint_an_entry_is_pending(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    entries, memory = log(1, signed=1)
    serve(portal, entries, memory)
    portal.fakes.on("audit", "GET", "/v1/checkpoints/latest", httpx.Response(404, json={"status": 404}))
    page = await portal.client.get("/audit/entrees/0")
    assert outcome(page) == "pending" and "Point de contrôle utilisé" not in page.text
