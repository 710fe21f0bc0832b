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
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import KAFKA, RESULTS, drop_database, fresh_database, fresh_topic, percentile, run_wrk
from cdap_shared.db import asyncpg_dsn
from cdap_shared.testing import JwksServer, ServiceProcess, TokenMinter, migrate

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
    return {
        "first_page_p50_ms": round(percentile(first, 50) * 1000, 2),
        "first_page_p99_ms": round(percentile(first, 99) * 1000, 2),
        "cursor_pages": len(follow),
        "cursor_page_p50_ms": round(percentile(follow, 50) * 1000, 2),
        "cursor_page_p99_ms": round(percentile(follow, 99) * 1000, 2),
    }


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
            "cdap_access",
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
        "workflow_requests_per_s": "not measured",
    }
    return {
        "description": f"GET {QUERY} with {count:,} open requests in department 76: one client (first page "
        f"x{runs}, then {pages} next_cursor pages) and wrk 20 connections {seconds}s, vs the same keyset "
        "SELECT from asyncpg, one at a time",
        "cdap": cdap,
        "baseline": base,
        "ratios": {
            "first_page_p99": round(cdap["first_page_p99_ms"] / max(base["first_page_p99_ms"], 0.01), 2),
            "cursor_page_p99": round(cdap["cursor_page_p99_ms"] / max(base["cursor_page_p99_ms"], 0.01), 2),
        },
        "targets": {
            "first_page_p99_ms": "queue query p99 < 50 ms at 100,000 open requests",
            "wrk_p99": "< 50 ms",
        },
        "notes": "Workflow throughput (requests carried submit -> approve -> grant per second) is not measured "
        "yet. The baseline runs one query at a time over one connection; compare it with the CDAP one-client "
        "figures; wrk figures are the service under 20 concurrent connections.",
    }
