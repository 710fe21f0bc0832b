"""bench/lookup: lookups/s and latency with 1,000,000 dossiers, 50 connections (wrk), against the floor
(a bare FastAPI endpoint doing one SELECT by key and one INSERT in one transaction, same database).

Both servers run as one uvicorn process each, one after the other, alternating twice; the dossiers
service runs for real: token verification (JWKS), grant projection, policy, outbox, relay to Kafka.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import ADMIN_DSN, KAFKA, RESULTS, run_wrk
from cdap_dossiers.generate import build_pools, make_dossier
from cdap_dossiers.projections import dossier_row
from cdap_shared.testing import JwksServer, ServiceProcess, TokenMinter, migrate

DB = "cdap_bench_dossiers"
ROOT = Path(__file__).resolve().parents[1]
FIRST = 1_000_000
USERS = 50
COLUMNS = (
    "numero",
    "department",
    "version",
    "opposition",
    "landlord_siret",
    "rsa_referent_siret",
    "nir",
    "family_name",
    "given_name",
    "family_name_key",
    "birth_date",
    "phone_key",
    "postal_code",
    "sections",
)


def _url(driver: str = "postgresql+asyncpg") -> str:
    return ADMIN_DSN.replace("postgresql://", f"{driver}://").rsplit("/", 1)[0] + f"/{DB}"


async def load_dossiers(count: int, progress: Any) -> None:
    """Create (once) and fill the bench database straight through COPY, rows built by the projection."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB):
            await admin.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await admin.close()
    migrate(str(ROOT / "services" / "dossiers"), _url())
    conn = await asyncpg.connect(_url("postgresql"))
    try:
        have = await conn.fetchval("SELECT count(*) FROM dossier")
        rng, pools = random.Random(11), build_pools(11)
        for start in range(FIRST + have, FIRST + count, 20_000):
            rows = []
            for n in range(start, min(start + 20_000, FIRST + count)):
                row = dossier_row(make_dossier(rng, pools, f"{n:07d}", "76"))
                row["sections"] = json.dumps(row["sections"])
                rows.append(tuple(row[c] for c in COLUMNS))
            await conn.copy_records_to_table("dossier", records=rows, columns=COLUMNS)
            progress("loading 1,000,000 dossiers", (start + 20_000 - FIRST) / count)
        today = date.today()
        await conn.execute("DELETE FROM grant_projection")
        await conn.executemany(
            "INSERT INTO grant_projection VALUES ($1, $2, 'org-bench', '73282932000074', 'T1', '76', $3, $4, 'active')",
            [
                (f"g-{i}", f"bench-user-{i}", today - timedelta(days=1), today + timedelta(days=300))
                for i in range(USERS)
            ],
        )
        await conn.execute("TRUNCATE outbox")
        await conn.execute("VACUUM ANALYZE dossier")
    finally:
        await conn.close()


def wrk(url: str, tokens: list[str], seconds: int, count: int, connections: int = 50) -> dict[str, float]:
    lua = (
        "local tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        f"  local n = math.random({FIRST}, {FIRST + count - 1})\n"
        "  return wrk.format('GET', '/v1/dossiers/' .. n .. '?motif=accompagnement_social',"
        " {['Authorization'] = 'Bearer ' .. tokens[(i % #tokens) + 1]})\n"
        "end\n"
    )
    return run_wrk(url, lua, seconds, connections)


async def run(progress: Any, quick: bool = False) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/lookup needs wrk: apt-get install wrk")
    count = 20_000 if quick else 1_000_000
    seconds = 5 if quick else 20
    await load_dossiers(count, progress)
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    tokens = [
        minter.mint(
            f"bench-user-{i}", grants=[{"id": f"g-{i}", "profile": "T1", "department": "76"}], ttl=3600
        )
        for i in range(USERS)
    ]
    logs = RESULTS / "logs"
    cdap = ServiceProcess(
        "cdap_dossiers",
        {
            "CDAP_DATABASE_URL": _url(),
            "CDAP_KAFKA_BOOTSTRAP": KAFKA,
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_RATE_LIMIT_USER": "1000000",
            "CDAP_DB_POOL_SIZE": "20",
            "CDAP_LOG_LEVEL": "WARNING",
            "CDAP_CONSUMER_GROUP": "bench-dossiers",
        },
        logs / "lookup-cdap.log",
    )
    floor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.floor_app:app",
            "--port",
            "18999",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "BENCH_FLOOR_DSN": _url("postgresql")},
        cwd=ROOT,
    )
    results: dict[str, list[dict[str, float]]] = {"cdap": [], "floor": []}
    try:
        cdap.start()
        await asyncio.sleep(2)
        rounds = 1 if quick else 2
        for r in range(rounds):
            progress("wrk: floor (SELECT + INSERT)", r / rounds)
            results["floor"].append(wrk("http://127.0.0.1:18999", tokens, seconds, count))
            progress("wrk: CDAP lookup", r / rounds)
            results["cdap"].append(wrk(cdap.url, tokens, seconds, count))
        progress("wrk: floor (SELECT + INSERT)", 1.0)
        progress("wrk: CDAP lookup", 1.0)
    finally:
        cdap.stop()
        floor.terminate()
        floor.wait()
        jwks.close()

    def mean(name: str, key: str) -> float:
        return round(sum(x[key] for x in results[name]) / len(results[name]), 1)

    summary = {name: {k: mean(name, k) for k in ("requests_per_s", "p50_ms", "p99_ms")} for name in results}
    for name in results:
        summary[name]["non_2xx"] = sum(x["non_2xx"] for x in results[name])
        summary[name]["requests"] = sum(x["requests"] for x in results[name])
    return {
        "description": f"GET /v1/dossiers/{{numero}} with {count:,} dossiers, wrk 50 connections, {seconds}s x "
        f"{len(results['cdap'])} rounds, vs a bare SELECT + INSERT FastAPI endpoint on the same database",
        "cdap": summary["cdap"],
        "baseline": summary["floor"],
        "ratios": {
            "requests_per_s": round(
                summary["cdap"]["requests_per_s"] / summary["floor"]["requests_per_s"], 3
            ),
            "p99_ms": round(summary["cdap"]["p99_ms"] / summary["floor"]["p99_ms"], 2),
        },
        "targets": {"requests_per_s": ">= 0.75 x floor", "p99_ms": "<= 1.5 x floor"},
        "rounds": results,
    }
