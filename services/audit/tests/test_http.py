"""The HTTP contract: auditors only, filters and keyset pages, bad parameters as 4xx problem+json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cdap_audit.app import build
from cdap_testing.authz_table import coverage_gaps

from .conftest import Audit, consulted, suspended

pytestmark = pytest.mark.stack

ENDPOINTS = [
    "/v1/entries",
    "/v1/entries/0",
    "/v1/dossiers/1000001/consultations",
    "/v1/checkpoints/latest",
    "/v1/checkpoints/key",
    "/v1/proofs/inclusion?index=0&tree_size=1",
    "/v1/proofs/consistency?first=0&second=1",
    "/v1/alerts",
    "/v1/checkpoints/witnessed",
    "/v1/alerts/no-such-alert",
    "/v1/freshness",
]
# What an auditor gets where it is not 200: no witness is configured in these tests, and no alert.
AUDITOR_STATUS = {"/v1/checkpoints/witnessed": 404, "/v1/alerts/no-such-alert": 404}
# Operations outside the table, each with its own test: a witness has no token, its cosignature
# authenticates it (test_witness.py); the stream's body never ends, its roles are checked with ROLES
# in test_stream.py.
# Acknowledging and closing need an alert and a body: test_alert_reviews.py checks them with ROLES.
ELSEWHERE = {
    ("POST", "/v1/checkpoints/cosignatures"),
    ("GET", "/v1/entries/stream"),
    ("POST", "/v1/alerts/{alert_id}/acknowledge"),
    ("POST", "/v1/alerts/{alert_id}/close"),
}


@pytest.fixture
async def filled(audit: Audit) -> Audit:
    await audit.publish(consulted("alice", "1000001"), suspended("bob"))
    await audit.wait_for_entries(2)
    return audit


ROLES = [
    (None, 401),
    (["partner_user"], 403),
    (["partner_admin"], 403),
    (["partner_system"], 403),
    (["caf_instructor"], 403),
    (["caf_manager"], 403),
    (["caf_admin"], 403),
    (["caf_admin", "caf_manager"], 403),
    (["auditor"], 200),
]


async def test_only_auditors_get_in(filled: Audit) -> None:
    """Every endpoint x every role: the table of expected statuses, checked in full."""
    wrong = []
    for path in ENDPOINTS:
        for roles, role_status in ROLES:
            status = AUDITOR_STATUS.get(path, role_status) if role_status == 200 else role_status
            headers = filled.headers(roles) if roles else {}
            response = await filled.client.get(path, headers=headers)
            problem = response.headers["content-type"] == "application/problem+json"
            if response.status_code != status or (status >= 400 and not problem):
                wrong.append((path, roles, response.status_code, response.text[:100]))
    assert wrong == []


def test_every_endpoint_is_in_the_table() -> None:
    """Each /v1 operation of the OpenAPI document is called by the table above, and each table entry names
    an operation: a new endpoint fails here until its authorization is decided (and checked) there."""
    # The table calls GET only: an operation with another method needs its own rows, so it fails here too.
    called = {("GET", endpoint.split("?", 1)[0]) for endpoint in ENDPOINTS} | ELSEWHERE
    missing, orphans = coverage_gaps(build().openapi(), called)
    assert missing == [], "endpoints the authorization table does not call"
    assert orphans == []


async def test_a_bad_token_is_401(filled: Audit) -> None:
    response = await filled.client.get("/v1/entries", headers={"Authorization": "Bearer not.a.token"})
    assert response.status_code == 401


BAD_QUERIES = [
    "/v1/entries?cursor=abc",
    "/v1/entries?cursor=-1",
    "/v1/entries?limit=0",
    "/v1/entries?limit=100000",
    "/v1/entries?from=yesterday",
    "/v1/entries?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
    "/v1/entries?dossier=12",
    "/v1/entries?type=DROP%20TABLE",
    "/v1/entries?trace_id=xyz",
    "/v1/entries?order=sideways",
    "/v1/entries/-1",
    "/v1/entries/99999999999999999999999",
    "/v1/entries/5",
    "/v1/dossiers/abc/consultations",
    "/v1/proofs/inclusion?index=2&tree_size=2",
    "/v1/proofs/inclusion?index=0&tree_size=3",
    "/v1/proofs/inclusion?index=0",
    "/v1/proofs/inclusion?index=x&tree_size=1",
    "/v1/proofs/inclusion?index=0&tree_size=99999999999999999999999",
    "/v1/proofs/consistency?first=2&second=1",
    "/v1/proofs/consistency?first=1&second=3",
    "/v1/proofs/consistency?first=-1&second=1",
    "/v1/alerts?severity=fatal",
    "/v1/alerts?cursor=1e3",
    "/v1/checkpoints/witnessed?witness=a%00b",
    "/v1/checkpoints/witnessed?witness=a+b",
]


async def test_bad_parameters_are_4xx_problems(filled: Audit) -> None:
    wrong = []
    for query in BAD_QUERIES:
        response = await filled.client.get(query, headers=filled.headers())
        problem = response.headers["content-type"] == "application/problem+json"
        if not (400 <= response.status_code < 500 and problem):
            wrong.append((query, response.status_code, response.text[:100]))
    assert wrong == []


async def test_filters_and_keyset_pages(audit: Audit) -> None:
    base = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    events = [
        consulted(
            "alice" if i % 2 else "bob", "1000001" if i % 3 else "1000002", at=base + timedelta(minutes=i)
        )
        for i in range(9)
    ]
    await audit.publish(*events, suspended("alice"))
    await audit.wait_for_entries(10)

    by_alice = await audit.all_entries(actor="alice")
    assert len(by_alice) == 4 and all(i["actor"] == "alice" for i in by_alice)  # not the suspension
    pages, cursor = [], None
    while True:
        params = {"actor": "alice", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await audit.get("/v1/entries", **params)
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2]
    assert [i["index"] for p in pages for i in p] == [i["index"] for i in by_alice]

    newest_first = await audit.get("/v1/entries", order="desc", limit=3)
    assert [i["index"] for i in newest_first["items"]] == [9, 8, 7]

    consultations = await audit.get("/v1/dossiers/1000002/consultations")
    assert {i["subject"] for i in consultations["items"]} == {"1000002"}
    assert len(consultations["items"]) == 3
    assert len((await audit.get("/v1/entries", dossier="1000002"))["items"]) == 3

    window = await audit.get(
        "/v1/entries", **{"from": (base + timedelta(minutes=2)).isoformat(), "to": "2026-03-02T10:05:00"}
    )
    assert len(window["items"]) == 3  # minutes 2, 3 and 4; a time without zone is UTC
    typed = await audit.get("/v1/entries", type="identity.user.suspended")
    assert [i["actor"] for i in typed["items"]] == ["admin-1"]
    # Events of several partitions are logged in the order they are consumed, not published: the
    # entry of events[4] is wherever it landed, and both ways of reading it must agree.
    by_event = await audit.get("/v1/entries", event_id=events[4].id)
    [index] = [i["index"] for i in by_event["items"]]
    one = await audit.get(f"/v1/entries/{index}")
    assert one["event_id"] == events[4].id


async def test_what_the_log_cannot_give_is_a_problem_in_its_own_words(audit: Audit) -> None:
    """Each refusal reaches the client through the one error table; the log here is empty."""
    headers = audit.headers()
    refusals = [
        (
            "GET",
            "/v1/entries/5",
            None,
            404,
            "No such entry",
            "No entry at index 5 (beyond the log, or purged).",
        ),
        ("GET", "/v1/alerts/no-such-alert", None, 404, "No such alert", "No alert no-such-alert."),
        (
            "POST",
            "/v1/alerts/no-such-alert/acknowledge",
            b'{"comment": "on it"}',
            404,
            "No such alert",
            "No alert no-such-alert.",
        ),
        (
            "GET",
            "/v1/proofs/inclusion?index=0&tree_size=1",
            None,
            400,
            "Invalid proof request",
            "Need index < tree_size <= 0 (the log's size).",
        ),
        (
            "GET",
            "/v1/proofs/consistency?first=0&second=2",
            None,
            400,
            "Invalid proof request",
            "Need first <= second <= 0 (the log's size).",
        ),
        (
            "GET",
            "/v1/checkpoints/witnessed",
            None,
            404,
            "No witness configured",
            "Set CDAP_AUDIT_WITNESS_KEYS to accept cosignatures.",
        ),
        (
            "POST",
            "/v1/checkpoints/cosignatures",
            b"\xff",
            400,
            "Not a signed note",
            "The body is not UTF-8 text.",
        ),
    ]
    for method, path, body, status, title, detail in refusals:
        answer = await audit.client.request(
            method, path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json"), path
        problem = answer.json()
        assert (problem["title"], problem["detail"], problem["status"]) == (title, detail, status), path
        assert "reason" not in problem, path
    # A note that is not one: the signing module's refusal, in its words.
    answer = await audit.client.post("/v1/checkpoints/cosignatures", content=b"not a note")
    assert answer.status_code == 400 and answer.json()["title"] == "Not a signed note", answer.text
    assert await audit.sql("SELECT 1 FROM alert_review") == []
