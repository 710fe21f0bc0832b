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

from .conftest import AUDITOR, T1_USER, PortalClient, csrf_of

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


def alert(state: str = "open", **fields: Any) -> dict[str, Any]:
    """An alert as `GET /v1/alerts` serves it."""
    return {
        "id": 1, "alert_id": "al-1", "rule": "repeated_denials", "severity": "critical", "actor": "u-1",
        "organisation_id": "org-1", "detail": "10 refus en 10 min", "entry_index": 4,
        "event_time": "2026-11-30T10:00:00+00:00", "raised_at": "2026-11-30T10:00:01+00:00",
        "actor_name": "Alice Durand", "organisation_name": "CCAS de Rouen", "state": state,
        "acknowledged_by": None, "acknowledged_at": None, "acknowledgement": None,
        "closed_by": None, "closed_at": None, "closing_comment": None, **fields,
    }  # fmt: skip


async def test_alerts_show_their_state_and_an_acknowledgement_is_confirmed_then_sent(
    portal: PortalClient,
) -> None:
    await portal.login(AUDITOR)
    portal.fakes.on(
        "audit", "GET", "/v1/alerts", httpx.Response(200, json={"items": [alert()], "next_cursor": None})
    )
    page = await portal.client.get("/audit/alertes?etat=open")
    assert page.status_code == 200 and 'data-state="open"' in page.text
    assert "Alice Durand" in page.text and "CCAS de Rouen" in page.text and "Prendre en charge" in page.text
    assert portal.fakes.made("audit")[-1].request.url.params["state"] == "open"

    csrf = csrf_of(page.text)
    form = {"csrf_token": csrf, "commentaire": "Appel au CCAS."}
    asked = await portal.client.post("/audit/alertes/al-1/acquittement", data=form)
    assert asked.status_code == 200 and "Confirmer" in asked.text and "inscrits au journal" in asked.text
    assert [c for c in portal.fakes.made("audit") if c.method == "POST"] == []  # nothing done yet

    acknowledged = alert("acknowledged", acknowledgement="Appel au CCAS.", acknowledged_by="aud")
    portal.fakes.on("audit", "POST", "/v1/alerts/al-1/acknowledge", httpx.Response(200, json=acknowledged))
    done = await portal.client.post("/audit/alertes/al-1/acquittement", data=form | {"confirme": "oui"})
    assert done.status_code == 303 and done.headers["location"] == "/audit/alertes?info=acquittement"
    [call] = [c for c in portal.fakes.made("audit") if c.method == "POST"]
    assert json.loads(call.request.content) == {"comment": "Appel au CCAS."} and call.bearer

    # Someone else closed it meanwhile: the audit says 409, the page says nothing was done.
    portal.fakes.on("audit", "POST", "/v1/alerts/al-1/close", httpx.Response(409, json={"status": 409}))
    late = await portal.client.post(
        "/audit/alertes/al-1/cloture", data={"csrf_token": csrf, "confirme": "oui"}
    )
    assert late.headers["location"] == "/audit/alertes?info=transition"
    # Acknowledging says what is done: without a comment nothing is sent.
    empty = await portal.client.post(
        "/audit/alertes/al-1/acquittement", data={"csrf_token": csrf, "confirme": "oui"}
    )
    assert empty.headers["location"] == "/audit/alertes?info=commentaire"
    assert len([c for c in portal.fakes.made("audit") if c.method == "POST"]) == 2


async def test_the_live_feed_relays_the_audit_stream_as_table_rows_and_resumes(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    entries, _ = log(2, signed=2)
    named = {**entries[1], "actor_name": "Alice Durand", "organisation_name": "CCAS de Rouen"}
    upstream = f"retry: 1000\n\n: heartbeat\n\nid: 1\nevent: entry\ndata: {json.dumps(named)}\n\n"
    portal.fakes.on(
        "audit",
        "GET",
        "/v1/entries/stream",
        httpx.Response(200, text=upstream, headers={"content-type": "text/event-stream"}),
    )
    feed = await portal.client.get("/audit/flux?acteur=u-1", headers={"Last-Event-ID": "0"})
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")
    assert feed.text.startswith("retry: 1000\n\n: heartbeat\n\nid: 1\nevent: entry\ndata: <tr>")
    assert "Alice Durand" in feed.text and "/audit/entrees/1" in feed.text
    [call] = portal.fakes.made("audit")
    assert call.request.headers["last-event-id"] == "0" and call.request.url.params["actor"] == "u-1"
    assert call.bearer  # the auditor's own token: the audit checks the role

    # The first page of a search follows the feed; an older page does not.
    portal.fakes.on(
        "audit", "GET", "/v1/entries", httpx.Response(200, json={"items": [named], "next_cursor": None})
    )
    page = await portal.client.get("/audit?acteur=u-1")
    assert 'sse-connect="/audit/flux?acteur=u-1"' in page.text and "htmx-ext-sse.min.js" in page.text
    older = await portal.client.get("/audit?acteur=u-1&page=5")
    assert "sse-connect" not in older.text
    assert (await portal.client.get("/audit/flux?dossier=12")).status_code == 204  # a bad search: nothing


async def test_only_auditors_follow_the_feed_or_review_alerts(portal: PortalClient) -> None:
    await portal.login(T1_USER)
    csrf = await portal.csrf("/")
    assert (await portal.client.get("/audit/flux")).status_code == 403
    form = {"csrf_token": csrf, "commentaire": "vu", "confirme": "oui"}
    assert (await portal.client.post("/audit/alertes/al-1/acquittement", data=form)).status_code == 403
    assert portal.fakes.made("audit") == []  # the audit service was never asked


AUDIT_PAGES = ("/audit", "/audit/consultations", "/audit/alertes", "/audit/point-de-controle")


async def test_every_audit_page_says_until_when_the_log_is_complete(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    portal.fakes.on("audit", "GET", "/v1/.*", httpx.Response(200, json={"items": [], "next_cursor": None}))
    for path in AUDIT_PAGES:
        page = await portal.client.get(path)
        # 13:05 UTC is 14:05 in Paris; caught up: an information, no warning.
        assert 'Journal à jour au <strong id="log-as-of">30/11 14:05</strong>' in page.text, path
        assert "fr-alert--info" in page.text and 'id="log-lagging"' not in page.text, path
    empty = await portal.client.get("/audit/consultations?numero=7600101")
    assert "Aucune consultation de ce dossier n'est enregistrée.</p>" in empty.text


async def test_while_ingestion_lags_no_page_says_nothing_happened_for_certain(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    portal.fakes.on("audit", "GET", "/v1/.*", httpx.Response(200, json={"items": [], "next_cursor": None}))
    portal.fakes.freshness = {
        "as_of": "2026-11-30T13:05:00Z",
        "caught_up": False,
        "waiting": 1250,
        "stalled": True,
    }
    for path in AUDIT_PAGES:
        page = await portal.client.get(path)
        assert "30/11 14:05" in page.text and "fr-alert--warning" in page.text, path
        assert "1250 événements en attente, sans progression" in page.text, path
    empty = await portal.client.get("/audit/consultations?numero=7600101")
    assert "n'est enregistrée.</p>" not in empty.text
    assert "une consultation récente peut manquer" in empty.text

    portal.fakes.freshness = None  # the audit does not say: unknown, so not conclusive either
    unknown = await portal.client.get("/audit/consultations?numero=7600101")
    assert "n'est pas connue" in unknown.text and "une consultation récente peut manquer" in unknown.text


async def test_the_log_is_searched_by_a_person_s_e_mail(portal: PortalClient) -> None:
    await portal.login(AUDITOR)
    portal.fakes.on(
        "audit", "GET", "/v1/entries", httpx.Response(200, json={"items": [], "next_cursor": None})
    )
    page = await portal.client.get("/audit?acteur=lea.martin%40ccas-rouen.fr")
    assert page.status_code == 200 and "adresse électronique de la personne" in page.text
    [call] = portal.fakes.made("audit")
    assert call.request.url.params["actor"] == "lea.martin@ccas-rouen.fr"
