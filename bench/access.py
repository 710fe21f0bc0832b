"""bench/access: the approvers' queue (`GET /v1/access-requests?department=76&state=submitted&limit=50`)
with 100,000 open requests in the table, against a plain asyncpg SELECT of the same page.

The access-requests service runs as a real process (`ServiceProcess`, token checked against a JWKS)
on a fresh database filled straight through COPY. Measured: wrk (20 connections) on the first page,
one client reading pages one after another (first page, then following `next_cursor`), and the
baseline: the same keyset query from Python with asyncpg, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import (
    KAFKA,
    RESULTS,
    drop_database,
    fresh_database,
    fresh_topic,
    percentile,
    run_wrk,
    start_floor,
    wait_until_answering,
)
from cdap_shared import services as registry
from cdap_shared.db import asyncpg_dsn
from cdap_testing import JwksServer, ServiceProcess, TokenMinter, free_port, migrate

Progress = Callable[[str, float], None]
ROOT = Path(__file__).resolve().parents[1]
QUERY = "/v1/access-requests?department=76&state=submitted&limit=50"
COLUMNS = (
    "id",
    "kind",
    "organisation_id",
    "applicant",
    "applicant_email",
    "profile",
    "department",
    "justification",
    "valid_until",
    "sensitive",
    "state",
    "stage",
    "due",
    "version",
    "approvals",
    "requested_documents",
    "submitted_by",
    "contact_email",
    "submitted_at",
    "state_since",
    "reminded",
    "escalated",
)
# Open states, weighted: most requests wait for a first decision.
STATES = (("submitted", 1, 7), ("documents_requested", 1, 2), ("awaiting_second_approval", 2, 1))


async def load_requests(dsn: str, count: int, progress: Progress) -> None:
    rng = random.Random(7)
    today = date.today()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, count, 20_000):
            rows = []
            for i in range(start, min(start + 20_000, count)):
                state, stage, _ = rng.choices(STATES, weights=[w for *_, w in STATES])[0]
                email = f"agent{i}@partner{i % 300}.example"
                submitted = now - timedelta(days=rng.randint(0, 20), seconds=rng.randint(0, 86_400))
                rows.append(
                    (
                        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "new",
                        f"org-{i % 300}",
                        json.dumps(
                            {
                                "family_name": f"Nom{i}",
                                "given_name": "Camille",
                                "email": email,
                                "job_title": "travailleur social",
                            }
                        ),
                        email,
                        "T1",
                        "76",
                        "Accompagnement social des allocataires du secteur.",
                        today + timedelta(days=365),
                        False,
                        state,
                        stage,
                        today + timedelta(days=rng.randint(1, 30)),  # in the future: nothing overdue
                        1,
                        "[]",
                        "[]",
                        f"partner-user-{i % 300}",
                        None,
                        submitted,
                        submitted,
                        False,
                        False,
                    )
                )
            await conn.copy_records_to_table("access_request", records=rows, columns=COLUMNS)
            progress(f"loading {count:,} open requests", (start + 20_000) / count)
        await conn.execute("VACUUM ANALYZE access_request")
    finally:
        await conn.close()


def wrk(url: str, token: str, seconds: int, connections: int = 20) -> dict[str, float]:
    lua = (
        "request = function()\n"
        f"  return wrk.format('GET', '{QUERY}', {{['Authorization'] = 'Bearer {token}'}})\n"
        "end\n"
    )
    return run_wrk(url, lua, seconds, connections)


async def sequential(url: str, token: str, runs: int, pages: int, progress: Progress) -> dict[str, float]:
    """One client: the first page `runs` times, then `pages` pages following `next_cursor`."""
    first: list[float] = []
    follow: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for k in range(runs):
            t = time.perf_counter()
            r = await client.get(QUERY)
            first.append(time.perf_counter() - t)
            r.raise_for_status()
            if k % 100 == 0:
                progress("CDAP queue: one client", k / (runs + pages))
        cursor = r.json()["next_cursor"]
        for k in range(pages):
            if cursor is None:
                break
            t = time.perf_counter()
            r = await client.get(QUERY, params={"cursor": cursor})
            follow.append(time.perf_counter() - t)
            r.raise_for_status()
            cursor = r.json()["next_cursor"]
            progress("CDAP queue: one client", (runs + k) / (runs + pages))
    return page_timings(first, follow)


def page_timings(first: list[float], follow: list[float]) -> dict[str, float]:
    """The result block of a paging run: first pages' and cursor pages' p50 and p99 (ms), pages followed."""
    return {
        "first_page_p50_ms": round(percentile(first, 50) * 1000, 2),
        "first_page_p99_ms": round(percentile(first, 99) * 1000, 2),
        "cursor_pages": len(follow),
        "cursor_page_p50_ms": round(percentile(follow, 50) * 1000, 2),
        "cursor_page_p99_ms": round(percentile(follow, 99) * 1000, 2),
    }


async def baseline(dsn: str, runs: int, pages: int, progress: Progress) -> dict[str, float]:
    """The floor: the same keyset page straight from asyncpg, one query at a time."""
    sql = (
        "SELECT id, kind, state, stage, due, organisation_id, profile, department, applicant, valid_until,"
        " submitted_at FROM access_request WHERE department = '76' AND state = 'submitted' {after}"
        " ORDER BY due ASC NULLS LAST, id LIMIT 51"
    )
    first_sql = sql.format(after="")
    next_sql = sql.format(after="AND (due > $1 OR (due = $1 AND id > $2) OR due IS NULL)")
    first: list[float] = []
    follow: list[float] = []
    conn = await asyncpg.connect(dsn)
    try:
        stmt = await conn.prepare(first_sql)
        nxt = await conn.prepare(next_sql)
        for k in range(runs):
            t = time.perf_counter()
            rows = await stmt.fetch()
            first.append(time.perf_counter() - t)
            if k % 200 == 0:
                progress("baseline: asyncpg SELECT", k / (runs + pages))
        last = rows[49]
        for k in range(pages):
            t = time.perf_counter()
            rows = await nxt.fetch(last["due"], last["id"])
            follow.append(time.perf_counter() - t)
            if len(rows) <= 50:
                break
            last = rows[49]
            progress("baseline: asyncpg SELECT", (runs + k) / (runs + pages))
    finally:
        await conn.close()
    return page_timings(first, follow)


async def run(progress: Progress, quick: bool = False) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/access needs wrk: apt-get install wrk")
    count, seconds, runs, pages = (5_000, 3, 500, 50) if quick else (100_000, 10, 2_000, 200)
    url = await fresh_database("access")
    dsn = asyncpg_dsn(url)
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    token = minter.mint(
        "bench-instructor",
        roles=["caf_instructor"],
        department="76",
        email="instructeur@caf76.example",
        ttl=3600,
    )
    service: ServiceProcess | None = None
    try:
        await asyncio.to_thread(migrate, str(ROOT / "services" / "access-requests"), url)
        await load_requests(dsn, count, progress)
        base = await baseline(dsn, runs, pages, progress)
        service = ServiceProcess(
            registry.service("access-requests").package,
            {
                "CDAP_DATABASE_URL": url,
                "CDAP_KAFKA_BOOTSTRAP": KAFKA,
                "CDAP_JWKS_URL": jwks.url,
                "CDAP_IDENTITY_TOPIC": await fresh_topic("access-identity"),
                "CDAP_ACCESS_TOPIC": await fresh_topic("access-access"),
                "CDAP_CONSUMER_GROUP": f"bench-access-{uuid.uuid4().hex[:8]}",
                "CDAP_SCHEDULER_INTERVAL_SECONDS": "0",
                "CDAP_MAIL_POLL_SECONDS": "0",
                "CDAP_DB_POOL_SIZE": "20",
                "CDAP_LOG_LEVEL": "WARNING",
            },
            RESULTS / "logs" / "access-cdap.log",
        )
        await asyncio.to_thread(service.start, 60.0)
        await asyncio.sleep(1)
        one = await sequential(service.url, token, runs, pages, progress)
        progress("wrk: CDAP queue, 20 connections", 0.0)
        loaded = await asyncio.to_thread(wrk, service.url, token, seconds)
        progress("wrk: CDAP queue, 20 connections", 1.0)
    finally:
        if service is not None:
            service.stop()
        jwks.close()
        await drop_database(url)
    cdap = {
        **one,
        "wrk_requests_per_s": round(loaded["requests_per_s"], 1),
        "wrk_p50_ms": round(loaded["p50_ms"], 2),
        "wrk_p99_ms": round(loaded["p99_ms"], 2),
        "wrk_requests": loaded["requests"],
        "wrk_non_2xx": loaded["non_2xx"],
    }
    wf_count, wf_clients = (50, 5) if quick else (500, 10)
    wf_cdap, wf_base = await workflow(progress, wf_count, wf_clients)
    cdap |= wf_cdap
    base = {**base, **wf_base}
    return {
        "description": f"GET {QUERY} with {count:,} open requests in department 76: one client (first page "
        f"x{runs}, then {pages} next_cursor pages) and wrk 20 connections {seconds}s, vs the same keyset "
        "SELECT from asyncpg, one at a time; workflow throughput end to end (submit -> two approvals -> "
        "identity provisions -> provisioned) vs the same calls on a bare endpoint",
        "cdap": cdap,
        "baseline": base,
        "ratios": {
            "first_page_p99": round(cdap["first_page_p99_ms"] / max(base["first_page_p99_ms"], 0.01), 2),
            "cursor_page_p99": round(cdap["cursor_page_p99_ms"] / max(base["cursor_page_p99_ms"], 0.01), 2),
            "workflow_requests_per_s": round(
                wf_cdap["workflow_requests_per_s"] / wf_base["workflow_requests_per_s"], 3
            ),
            "workflow_calls_per_s": round(
                wf_cdap["workflow_calls_per_s"] / wf_base["workflow_calls_per_s"], 3
            ),
        },
        "targets": {
            "first_page_p99_ms": "queue query p99 < 50 ms at 100,000 open requests",
            "workflow_requests_per_s": "requests carried to provisioned per second (measured)",
            "wrk_p99": "< 50 ms",
        },
        "notes": "The queue baseline runs one query at a time over one connection; compare it with the CDAP "
        "one-client figures; wrk figures are the service under 20 concurrent connections. "
        f"Workflow: {wf_count} T1 requests (sensitive: two approvals), {wf_clients} concurrent clients each "
        "submitting as the partner administrator, approving as a CAF instructor then as a CAF manager; "
        "access-requests and identity run for real (identity creates the account and issues the grant, "
        "access-requests records `provisioned` from identity's event). `workflow_requests_per_s` counts "
        "requests provisioned per second, first submission to last provisioned; `workflow_calls_per_s` "
        "the same clients' three calls alone; `workflow_p50/p99_ms` is submission -> provisioned (database "
        "polled every 100 ms while the clients run); `workflow_provisioned_during_calls` how many were "
        "provisioned before the last call returned, `workflow_tail_after_calls_ms` how long the last one took "
        "after it. Baseline: the same three calls on a bare FastAPI app doing one INSERT and two "
        "UPDATEs (no events, no provisioning).",
    }


# ---------------------------------------------------------------- workflow throughput, end to end

ORG = "org-bench-workflow"
SIRET = "21760540100025"


async def drive(
    url: str,
    headers: dict[str, dict[str, str]],
    count: int,
    concurrency: int,
    progress: Progress,
    phase: str,
) -> tuple[dict[str, float], float, list[float]]:
    """`concurrency` clients each submit a T1 request, approve it (stage 1) and approve it (stage 2), until
    `count` requests went through. Returns id -> submit time, the end time, per-request seconds."""
    submitted: dict[str, float] = {}
    spans: list[float] = []
    next_i = 0
    valid_until = (date.today() + timedelta(days=200)).isoformat()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < count:
            i, next_i = next_i, next_i + 1
            t0 = time.time()
            r = await client.post(
                "/v1/access-requests",
                headers=headers["admin"],
                json={
                    "organisation_id": ORG,
                    "applicant": {
                        "family_name": f"Agent{i}",
                        "given_name": "Camille",
                        "email": f"agent{i}.{uuid.uuid4().hex[:6]}@ccas-bench.example",
                        "job_title": "travailleur social",
                    },
                    "profile": "T1",
                    "department": "76",
                    "justification": "Accompagnement social des allocataires du secteur.",
                    "valid_until": valid_until,
                },
            )
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            submitted[rid] = t0
            for who in ("instructor", "manager"):
                r = await client.post(
                    f"/v1/access-requests/{rid}/decisions",
                    headers=headers[who],
                    json={"decision": "approve", "comment": "ok"},
                )
                assert r.status_code == 200, r.text
            spans.append(time.time() - t0)
            progress(phase, len(spans) / count / 2)

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return submitted, time.time(), spans


async def workflow(progress: Progress, count: int, concurrency: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Requests carried submit -> stage 1 -> stage 2 -> approved -> identity provisions -> provisioned,
    per second, with access-requests and identity running for real on fresh databases; the baseline
    is the same three calls on bench/floor_app.py (one INSERT, two UPDATEs, no events)."""
    identity_url, access_url = await fresh_database("wf_identity"), await fresh_database("wf_access")
    await asyncio.to_thread(migrate, str(ROOT / "services" / "identity"), identity_url)
    await asyncio.to_thread(migrate, str(ROOT / "services" / "access-requests"), access_url)
    today = date.today()
    conn = await asyncpg.connect(asyncpg_dsn(identity_url))
    await conn.execute(
        "INSERT INTO organisation (id, siret, name, kind, department, convention_reference, "
        "convention_valid_until, delegation_withdrawn, created_at) VALUES ($1, $2, 'CCAS Bench', "
        "'social_services', '76', 'CONV-BENCH', $3, false, now())",
        ORG,
        SIRET,
        today + timedelta(days=730),
    )
    await conn.close()
    access = await asyncpg.connect(asyncpg_dsn(access_url))
    await access.execute(
        "INSERT INTO access_organisation (organisation_id, siret, name, kind, department, convention_reference,"
        " convention_valid_until, administrators, delegation_withdrawn) VALUES ($1, $2, 'CCAS Bench', "
        "'social_services', '76', 'CONV-BENCH', $3, '[\"bench-partner-admin\"]', false)",
        ORG,
        SIRET,
        today + timedelta(days=730),
    )
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    tokens = {
        "admin": minter.mint(
            "bench-partner-admin",
            roles=["partner_admin"],
            org=ORG,
            email="admin@ccas-bench.example",
            ttl=3600,
        ),
        "instructor": minter.mint(
            "bench-instructor", roles=["caf_instructor"], department="76", email="i@caf76.example", ttl=3600
        ),
        "manager": minter.mint(
            "bench-manager", roles=["caf_manager"], department="76", email="m@caf76.example", ttl=3600
        ),
    }
    headers = {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}
    access_topic = await fresh_topic("wf-access")
    run = uuid.uuid4().hex[:8]
    common = {
        "CDAP_KAFKA_BOOTSTRAP": KAFKA,
        "CDAP_ACCESS_TOPIC": access_topic,
        "CDAP_CONSUMER_OFFSET_RESET": "latest",
        "CDAP_DB_POOL_SIZE": "20",
        "CDAP_LOG_LEVEL": "WARNING",
    }
    identity = ServiceProcess(
        registry.service("identity").package,
        {**common, "CDAP_DATABASE_URL": identity_url, "CDAP_CONSUMER_GROUP": f"bench-wf-identity-{run}"},
        RESULTS / "logs" / "access-workflow-identity.log",
    )
    service = ServiceProcess(
        registry.service("access-requests").package,
        {
            **common,
            "CDAP_DATABASE_URL": access_url,
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_CONSUMER_GROUP": f"bench-wf-access-{run}",
            "CDAP_SCHEDULER_INTERVAL_SECONDS": "0",
            "CDAP_MAIL_POLL_SECONDS": "0",
        },
        RESULTS / "logs" / "access-workflow.log",
    )
    floor_proc: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(identity.start, 60.0)
        await asyncio.to_thread(service.start, 60.0)
        async with httpx.AsyncClient() as client:
            for url in (identity.url, service.url):
                for _ in range(150):
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        break
                    await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # consumer groups settle on their partitions ("latest": join first)
        # Warm-up: one request all the way to provisioned, so both consumer groups are assigned and
        # every code path has run once before the clock starts.
        warm, _, _ = await drive(service.url, headers, 1, 1, lambda *_: None, "warm-up")
        deadline = time.time() + 120
        while not await access.fetchval(
            "SELECT count(*) FROM access_request WHERE state = 'provisioned' AND id = ANY($1::text[])",
            list(warm),
        ):
            if time.time() > deadline:
                raise RuntimeError("the warm-up request was never provisioned")
            await asyncio.sleep(0.2)
        phase = f"workflow: {count:,} requests to provisioned, {concurrency} clients"
        # Provisioned requests are watched while the clients run (every 100 ms), not after.
        provisioned: dict[str, float] = {}
        calls_done = asyncio.Event()

        async def watch() -> None:
            seen = set(warm)
            deadline = time.time() + 600
            while not (calls_done.is_set() and len(provisioned) >= count):
                if time.time() > deadline:
                    raise RuntimeError(f"only {len(provisioned)} of {count} requests provisioned")
                rows = await access.fetch(
                    "SELECT id FROM access_request WHERE state = 'provisioned' AND id <> ALL($1::text[])",
                    list(seen),
                )
                now = time.time()
                for row in rows:
                    seen.add(row["id"])
                    provisioned[row["id"]] = now
                if calls_done.is_set():
                    progress(phase, 0.5 + len(provisioned) / count / 2)
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        try:
            submitted, sent_all, spans = await drive(
                service.url, headers, count, concurrency, progress, phase
            )
        finally:
            calls_done.set()
        await watcher
        during = sum(1 for t in provisioned.values() if t <= sent_all)
        first = min(submitted.values())
        e2e = [provisioned[k] - submitted[k] for k in submitted]
        cdap = {
            "workflow_requests_per_s": round(count / (max(provisioned.values()) - first), 1),
            "workflow_calls_per_s": round(count / (sent_all - first), 1),
            "workflow_p50_ms": round(percentile(e2e, 50) * 1000, 1),
            "workflow_p99_ms": round(percentile(e2e, 99) * 1000, 1),
            "workflow_calls_p50_ms": round(percentile(spans, 50) * 1000, 1),
            "workflow_provisioned_during_calls": during,
            "workflow_tail_after_calls_ms": round((max(provisioned.values()) - sent_all) * 1000, 1),
        }
        floor_port = free_port()
        floor_proc = start_floor(floor_port, asyncpg_dsn(access_url))
        floor_url = f"http://127.0.0.1:{floor_port}"
        await wait_until_answering(f"{floor_url}/docs", 150)
        phase = f"workflow baseline: {count:,} requests, three writes each"
        submitted, sent_all, spans = await drive(floor_url, headers, count, concurrency, progress, phase)
        first = min(submitted.values())
        base = {
            "workflow_requests_per_s": round(count / (sent_all - first), 1),
            "workflow_calls_per_s": round(count / (sent_all - first), 1),
            "workflow_p50_ms": round(percentile(spans, 50) * 1000, 1),
            "workflow_p99_ms": round(percentile(spans, 99) * 1000, 1),
            "workflow_calls_p50_ms": round(percentile(spans, 50) * 1000, 1),
        }
        progress(phase, 1.0)
    finally:
        if floor_proc is not None:
            floor_proc.terminate()
            floor_proc.wait()
        service.stop()
        identity.stop()
        jwks.close()
        await access.close()
        await drop_database(identity_url)
        await drop_database(access_url)
    return cdap, base
