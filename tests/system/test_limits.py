"""Limits of the running system (issue 13), every service a real uvicorn process: request bodies refused
before they are read, the dossiers rate limits held by two replicas together, and the audited client IP
taken from X-Forwarded-For only when the peer is a listed proxy. See docs/security-tests.md."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from cdap_shared.bodylimit import UPLOAD_MAX_BODY
from cdap_shared.envelope import new_event_id
from cdap_shared.services import backends
from cdap_testing import plain_dsn
from cdap_testing.system import System, bootstrap_admin, wait_ready

pytestmark = pytest.mark.stack

SERVICES = backends()
HUNDRED_MB = 100 * 1024 * 1024
SEARCH_LIMIT = 1  # per caller and second: 12 searches at once cannot all fit, however slow the machine
LOOKUP_LIMIT = 5  # per caller and second, for the two replicas together: well under what a loaded
# machine serves (about 15 lookups/s through these two processes on a busy 2-core machine)
FORGED_IP = "203.0.113.66"


@dataclass
class World:
    system: System
    replica: System  # a second dossiers process on the same database, trusting 127.0.0.1 as a proxy
    admin: dict[str, Any]


@pytest.fixture(scope="module")
async def world(stack: dict[str, str]) -> AsyncIterator[World]:
    system = System(admin_url=stack["database"], kafka=stack["kafka"])
    dossiers_env = {
        "CDAP_RATE_LIMIT_USER": str(LOOKUP_LIMIT),
        "CDAP_SEARCH_RATE_LIMIT_USER": str(SEARCH_LIMIT),
    }
    # One caller's thousands of lookups would set off audit's critical volume rule, and identity would
    # suspend it mid-test (its next calls refused for standing, before any rate is counted): these tests
    # are about the limits, so audit runs with rules that raise nothing.
    quiet_rules = Path(tempfile.mkdtemp()) / "rules.toml"
    quiet_rules.write_text('version = "limits-test"\nrules = []\n')
    replica: System | None = None
    try:
        await system.start(
            *SERVICES,
            extra_env={"dossiers": dossiers_env, "audit": {"CDAP_ALERT_RULES_PATH": str(quiet_rules)}},
        )
        replica = await system.replica("dossiers", {**dossiers_env, "CDAP_TRUSTED_PROXIES": "127.0.0.1/32"})
        async with httpx.AsyncClient(timeout=20) as client:
            await wait_ready(client, *[system.url(name) for name in SERVICES] + [replica.url("dossiers")])
            admin = await bootstrap_admin(system, client, f"admin.{new_event_id()[-10:]}@caf76.fr")
        yield World(system, replica, admin)
    finally:
        if replica is not None:
            replica.stop()
        system.stop()


# ----------------------------------------------------------------- request bodies


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the one response on `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed without an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


def send_huge_body(
    url: str, path: str, content_type: str, *, chunked: bool
) -> tuple[int, dict[str, Any], int]:
    """POST 100 MB without credentials, as fast as the server takes it; stop when it answers.

    Returns the status, the problem document and how many body bytes were sent before the answer."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUNDRED_MB}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
        f"{framing}\r\n\r\n".encode()
    )
    piece = b"{" + b" " * (1024 * 1024 - 2) + b"}"
    sent = 0
    try:
        while sent < HUNDRED_MB:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came: the server read no further
            framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            sock.sendall(framed)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed by the server after its answer
    try:
        status, problem = _read_response(sock)
    finally:
        sock.close()
    return status, problem, sent


async def test_huge_unauthenticated_bodies_are_refused_413_before_they_are_read(world: World) -> None:
    system = world.system
    form, as_json = "application/x-www-form-urlencoded", "application/json"
    targets = {
        "identity": ("/v1/token", form),
        "access-requests": ("/v1/access-requests", as_json),
        "dossiers": ("/v1/dossiers/search", as_json),
        "audit": ("/v1/entries", as_json),  # no POST there: a declared size is refused all the same
    }
    for name, (path, content_type) in targets.items():
        process = system.processes[name].proc
        assert process is not None
        before = rss_bytes(process.pid)
        for chunked in (False, True):
            status, problem, sent = await asyncio.to_thread(
                send_huge_body, system.url(name), path, content_type, chunked=chunked
            )
            if name == "audit" and chunked:  # of unknown size: the 405 comes before any body is read
                assert status == 405, problem
            else:
                assert status == 413, (name, chunked, problem)
                assert problem["reason"] == "body_too_large" and problem["status"] == 413
            assert sent < HUNDRED_MB / 4, (name, chunked, sent)  # answered long before the end
        grown = rss_bytes(process.pid) - before
        assert grown < 16 * 1024 * 1024, (name, before, grown)  # a 100 MB body would show


async def test_an_upload_route_takes_10_mib_and_refuses_more_before_authentication(world: World) -> None:
    access = world.system.url("access-requests")
    path = f"/v1/access-requests/{new_event_id()}/documents"
    async with httpx.AsyncClient(timeout=30) as client:
        small = await client.post(access + path, files={"files": ("a.pdf", b"%PDF-1.4 " + b"0" * 1_000_000)})
    assert small.status_code == 401  # over 64 KiB but under the route's 10 MiB: on to authentication
    status, problem, _ = await asyncio.to_thread(
        send_huge_body, access, path, "multipart/form-data; boundary=x", chunked=False
    )
    assert status == 413 and problem["detail"] == f"This operation accepts at most {UPLOAD_MAX_BODY} bytes."


# ----------------------------------------------------------------- shared rate limits


async def _until_next_second() -> float:
    """Sleep to just after the next whole second (of the clock PostgreSQL reads too); return it."""
    start = float(int(time.time()) + 1)
    await asyncio.sleep(start - time.time() + 0.01)
    return start


@dataclass
class Answer:
    response: httpx.Response
    received: float  # the call was counted in a window that began before this instant


async def _hammer(
    client: httpx.AsyncClient, urls: list[str], headers: dict[str, str], start: float, seconds: int
) -> list[Answer]:
    """Lookups from one caller through both replicas, as fast as 12 workers go, from `start` (a whole
    second) until shortly before the `seconds`-th window after it ends. Each window is spent within its
    first tenths of a second, so stopping early loses no allowed call."""
    end = start + seconds - 0.3
    answers: list[Answer] = []

    async def worker(i: int) -> None:
        n = i
        while time.time() < end:
            response = await client.get(
                f"{urls[n % len(urls)]}/v1/dossiers/{9_000_000 + n % 1000:07d}",
                params={"motif": "accompagnement_social"},
                headers=headers,
            )
            answers.append(Answer(response, time.time()))
            n += 12

    await asyncio.gather(*(worker(i) for i in range(12)))
    return answers


async def test_two_dossiers_replicas_hold_a_caller_to_its_limit_together(world: World) -> None:
    urls = [world.system.url("dossiers"), world.replica.url("dossiers")]
    seconds = 6
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=24)) as client:
        start = await _until_next_second()
        answers = await _hammer(client, urls, world.admin["headers"], start, seconds)
    served = [a.response for a in answers if a.response.status_code != 429]
    refused = [a.response for a in answers if a.response.status_code == 429]
    # Answered before the last window ended: certainly counted in one of the `seconds` windows. An
    # answer after it may have been counted in the next window (a slow machine): it only counts towards
    # the lower bound.
    certain = [a.response for a in answers if a.received < start + seconds and a.response.status_code != 429]
    assert {r.status_code for r in served} <= {403, 404}  # the admin holds no grant: recorded refusals
    by_replica = {url: sum(str(r.request.url).startswith(url) for r in served) for url in urls}
    assert all(by_replica.values()), by_replica  # both replicas served part of the quota
    expected = LOOKUP_LIMIT * seconds
    summary = (len(certain), len(served), len(refused), by_replica)
    assert len(certain) <= 1.1 * expected, summary  # one replica's own count would allow twice as many
    assert len(served) >= 0.9 * expected, summary
    assert refused, "the caller was never held back"
    last = refused[-1]
    assert last.json()["reason"] == "rate_limited" and last.headers["Retry-After"] == "1"
    assert last.headers["RateLimit-Policy"] == f'"lookup";q={LOOKUP_LIMIT};w=1'
    recorded = await _consultations(world.system)
    audit_ids = {e["id"] for e in recorded if e["data"]["decision"] == "rate_limited"}
    assert {r.headers["X-Audit-Id"] for r in refused} <= audit_ids  # each 429 recorded like any lookup


async def test_searches_are_rate_limited_across_replicas(world: World) -> None:
    urls = [world.system.url("dossiers"), world.replica.url("dossiers")]
    body = {"motif": "accompagnement_social", "nir": "185057800608491"}
    async with httpx.AsyncClient(timeout=20) as client:
        await _until_next_second()
        began = time.time()
        answers = await asyncio.gather(
            *(
                client.post(f"{urls[i % 2]}/v1/dossiers/search", json=body, headers=world.admin["headers"])
                for i in range(12)
            )
        )
        ended = time.time()
    statuses = [a.status_code for a in answers]
    # One caller's searches wait for each other on its counter, so on a slow machine they spread over
    # several seconds: each second the two replicas together let SEARCH_LIMIT through, no more.
    windows = int(ended) - int(began) + 1
    assert len(statuses) - statuses.count(429) <= SEARCH_LIMIT * windows, (statuses, windows)
    assert 429 in statuses, statuses
    assert all(a.headers["X-Audit-Id"] for a in answers)


async def _consultations(system: System) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(plain_dsn(system.databases["dossiers"]))
    try:
        rows = await conn.fetch("SELECT payload FROM outbox ORDER BY id")
    finally:
        await conn.close()
    return [json.loads(bytes(r["payload"])) for r in rows]


# ----------------------------------------------------------------- client IP


async def test_a_forged_x_forwarded_for_is_not_recorded(world: World) -> None:
    forged = {"X-Forwarded-For": FORGED_IP}
    async with httpx.AsyncClient(timeout=20) as client:
        direct = await client.get(
            f"{world.system.url('dossiers')}/v1/dossiers/8000001",
            params={"motif": "accompagnement_social"},
            headers=world.admin["headers"] | forged,
        )
        proxied = await client.get(  # the replica trusts 127.0.0.1 as its proxy
            f"{world.replica.url('dossiers')}/v1/dossiers/8000002",
            params={"motif": "accompagnement_social"},
            headers=world.admin["headers"] | forged,
        )
        login = await client.post(
            f"{world.system.url('identity')}/v1/token",
            data={"grant_type": "password", "username": "nobody@caf76.fr", "password": "wrong-password-1"},
            headers=forged,
        )
    assert login.status_code in (400, 401)
    recorded = {e["id"]: e["data"] for e in await _consultations(world.system)}
    assert recorded[direct.headers["X-Audit-Id"]]["client_ip"] == "127.0.0.1"
    assert recorded[proxied.headers["X-Audit-Id"]]["client_ip"] == FORGED_IP
    conn = await asyncpg.connect(plain_dsn(world.system.databases["identity"]))
    try:
        payloads = [bytes(r["payload"]) for r in await conn.fetch("SELECT payload FROM outbox")]
    finally:
        await conn.close()
    failures = [json.loads(p)["data"] for p in payloads if b"login.failed" in p]
    assert failures and all(f["client_ip"] == "127.0.0.1" for f in failures)
    assert not any(FORGED_IP.encode() in p for p in payloads)
