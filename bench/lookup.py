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
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    ADMIN_DSN,
    KAFKA,
    RESULTS,
    database_url,
    fresh_topic,
    run_wrk,
    start_floor,
    wait_until_answering,
)
from cdap_cli.caf_feed import build_pools, make_dossier
from cdap_dossiers.handlers import dossier_row
from cdap_shared import services as registry
from cdap_testing import JwksServer, ServiceProcess, TokenMinter, free_port, migrate

DB = "cdap_bench_dossiers"
ROOT = Path(__file__).resolve().parents[1]
FIRST = 1_000_000
SMALL = 20_000
"""Dossiers enough for a quick run (and for the audit's lookup-to-checkpoint run)."""
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


async def load_dossiers(count: int, progress: Any) -> None:
    """Create (once) and fill the bench database straight through COPY, rows built by the projection."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB):
            await admin.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await admin.close()
    migrate(str(ROOT / "services" / "dossiers"), database_url(DB))
    conn = await asyncpg.connect(database_url(DB, "postgresql"))
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


def cdap_env(jwks_url: str, topics: dict[str, str]) -> dict[str, str]:
    """The service's settings: fresh feed topics, so no backlog of other runs' events is consumed."""
    return {
        **topics,
        "CDAP_DATABASE_URL": database_url(DB),
        "CDAP_KAFKA_BOOTSTRAP": KAFKA,
        "CDAP_JWKS_URL": jwks_url,
        "CDAP_RATE_LIMIT_USER": "1000000",
        "CDAP_DB_POOL_SIZE": "20",
        "CDAP_LOG_LEVEL": "WARNING",
        "CDAP_CONSUMER_GROUP": f"bench-dossiers-{topics['CDAP_CAF_TOPIC'][-10:]}",
        # Traces as a deployment records them (docs/deploy.md, Traces): 1 % of the traces that start here, every
        # trace a caller's sampled `traceparent` continues; every consultation keeps its trace id.
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }


def mean(rounds: list[dict[str, float]], key: str) -> float:
    return round(sum(x[key] for x in rounds) / len(rounds), 1)


def summarise(rounds: list[dict[str, float]]) -> dict[str, float]:
    out = {k: mean(rounds, k) for k in ("requests_per_s", "p50_ms", "p99_ms")}
    out["non_2xx"] = sum(x["non_2xx"] for x in rounds)
    out["requests"] = sum(x["requests"] for x in rounds)
    return out


async def pair(urls: tuple[str, str], tokens: list[str], seconds: int, count: int) -> dict[str, float]:
    """Two wrk processes at once (25 connections each), one per URL: summed throughput, worst p99."""
    a, b = await asyncio.gather(
        asyncio.to_thread(wrk, urls[0], tokens, seconds, count, 25),
        asyncio.to_thread(wrk, urls[1], tokens, seconds, count, 25),
    )
    return {
        "requests_per_s": a["requests_per_s"] + b["requests_per_s"],
        "p50_ms": (a["p50_ms"] + b["p50_ms"]) / 2,
        "p99_ms": max(a["p99_ms"], b["p99_ms"]),
        "requests": a["requests"] + b["requests"],
        "non_2xx": a["non_2xx"] + b["non_2xx"],
    }


async def profile(
    env: dict[str, str], tokens: list[str], seconds: int, count: int, quick: bool
) -> dict[str, Any]:
    """The dossiers service under pyinstrument (bench/profile_server.py) while wrk runs 50 connections."""
    port = free_port()
    stem = RESULTS / "logs" / "lookup-quick-profile" if quick else RESULTS / "lookup-profile"
    layers = stem.with_name(stem.name + "-layers.json")
    for path in (stem.with_suffix(".txt"), stem.with_suffix(".html"), layers):
        path.unlink(missing_ok=True)
    log = (RESULTS / "logs" / "lookup-profile.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.profile_server",
            registry.service("dossiers").package,
            str(port),
            str(stem),
        ],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_answering(f"{url}/ready", 300)
        proc.send_signal(signal.SIGUSR1)
        result = await asyncio.to_thread(wrk, url, tokens, seconds, count)
        proc.send_signal(signal.SIGUSR2)
        for _ in range(300):
            if stem.with_suffix(".html").exists():
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    html = stem.with_suffix(".html")
    if html.exists() and html.stat().st_size > 2_000_000:
        html.unlink()  # too large to keep in the repository; the text tree is the record
    if layers.exists():
        result["layers"] = json.loads(layers.read_text())
        layers.unlink()
    return result


async def run(progress: Any, quick: bool = False) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/lookup needs wrk: apt-get install wrk")
    count = SMALL if quick else 1_000_000
    seconds, rounds, step = (3, 1, 2) if quick else (15, 2, 5)
    levels = [1, 8, 64] if quick else [1, 2, 4, 8, 16, 32, 64, 128]
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
    topics = {
        "CDAP_CAF_TOPIC": await fresh_topic("lookup-caf"),
        "CDAP_IDENTITY_TOPIC": await fresh_topic("lookup-identity"),
    }
    env = cdap_env(jwks.url, topics)
    cdap = ServiceProcess(registry.service("dossiers").package, env, logs / "lookup-cdap.log")
    second = ServiceProcess(registry.service("dossiers").package, env, logs / "lookup-cdap-2.log")
    floor = start_floor(18999, database_url(DB, "postgresql"))
    floor_url = "http://127.0.0.1:18999"
    results: dict[str, list[dict[str, float]]] = {"cdap": [], "floor": []}
    sweep: dict[str, list[dict[str, float]]] = {"cdap": [], "floor": []}
    replicas: dict[str, list[dict[str, float]]] = {"one": [], "two": []}
    try:
        # Load only once the service says it is ready, as a load balancer would: warm, its lookup
        # connections open and prepared (docs/benchmarks.md, "Lookup: the tail after a start").
        cdap.start()
        await wait_until_answering(f"{cdap.url}/ready", 300)
        for r in range(rounds):
            progress("wrk 50 connections: floor (SELECT + INSERT)", r / rounds)
            results["floor"].append(await asyncio.to_thread(wrk, floor_url, tokens, seconds, count))
            progress("wrk 50 connections: CDAP lookup", r / rounds)
            results["cdap"].append(await asyncio.to_thread(wrk, cdap.url, tokens, seconds, count))
        progress("wrk 50 connections: floor (SELECT + INSERT)", 1.0)
        progress("wrk 50 connections: CDAP lookup", 1.0)
        for k, connections in enumerate(levels):
            progress(f"load sweep: {len(levels)} levels x {step}s, floor and CDAP", k / len(levels))
            for name, url in (("floor", floor_url), ("cdap", cdap.url)):
                point = await asyncio.to_thread(wrk, url, tokens, step, count, connections)
                sweep[name].append({"connections": connections, **point})
        progress(f"load sweep: {len(levels)} levels x {step}s, floor and CDAP", 1.0)
        second.start()
        await wait_until_answering(f"{second.url}/ready", 300)
        for r in range(rounds):
            progress("replicas: 1 vs 2, wrk 2 x 25 connections", r / rounds)
            replicas["one"].append(await pair((cdap.url, cdap.url), tokens, seconds, count))
            replicas["two"].append(await pair((cdap.url, second.url), tokens, seconds, count))
        progress("replicas: 1 vs 2, wrk 2 x 25 connections", 1.0)
    finally:
        second.stop()
        cdap.stop()
        floor.terminate()
        floor.wait()
    try:
        progress("pyinstrument profile under wrk 50 connections", 0.0)
        profiled = await profile(env, tokens, seconds, count, quick)
        progress("pyinstrument profile under wrk 50 connections", 1.0)
    finally:
        jwks.close()

    summary = {name: summarise(results[name]) for name in results}
    one, two = summarise(replicas["one"]), summarise(replicas["two"])
    replica_ratio = round(two["requests_per_s"] / one["requests_per_s"], 2)
    cdap_row = {
        **summary["cdap"],
        "replicas_2_requests_per_s": two["requests_per_s"],
        "replicas_2_p99_ms": two["p99_ms"],
        "profiled_requests_per_s": round(profiled["requests_per_s"], 1),
    }
    layers: dict[str, float] = profiled.pop("layers", {})
    base_row = {
        **summary["floor"],
        "replicas_2_requests_per_s": one["requests_per_s"],
        "replicas_2_p99_ms": one["p99_ms"],
        "profiled_requests_per_s": summary["cdap"]["requests_per_s"],
    }
    return {
        "description": f"GET /v1/dossiers/{{numero}} with {count:,} dossiers, wrk 50 connections, {seconds}s x "
        f"{rounds} rounds, vs a bare SELECT + INSERT FastAPI endpoint on the same database; a load sweep "
        f"({', '.join(map(str, levels))} connections, {step}s each); 1 vs 2 replicas of the dossiers service "
        "behind the same Kafka and PostgreSQL; a pyinstrument profile of the service under load",
        "cdap": cdap_row,
        "baseline": base_row,
        "ratios": {
            "requests_per_s": round(
                summary["cdap"]["requests_per_s"] / summary["floor"]["requests_per_s"], 3
            ),
            "p99_ms": round(summary["cdap"]["p99_ms"] / summary["floor"]["p99_ms"], 2),
            "replicas_2_requests_per_s": replica_ratio,
            "replicas_2_p99_ms": round(two["p99_ms"] / one["p99_ms"], 2),
            "profiled_requests_per_s": round(
                profiled["requests_per_s"] / summary["cdap"]["requests_per_s"], 2
            ),
        },
        "targets": {"requests_per_s": ">= 0.9 x floor", "p99_ms": "<= 1.5 x floor"},
        "notes": "Rows `replicas_2_*`: the CDAP column is two replicas (wrk 25 connections on each), the "
        "baseline column one replica taking both wrk runs (2 x 25 connections), alternated "
        f"{rounds} times; the ratio is 2 replicas / 1. Row `profiled_requests_per_s`: the service under "
        "pyinstrument (1 ms sampling) against the same service without it; the profile is "
        "bench/results/lookup-profile.txt. `non_2xx` are lookups of dossiers under opposition (3 % of "
        "the generated dossiers): 403, recorded like any other.\n\n" + rounds_line(results) + "\n\n"
        "Profile of the service under wrk, "
        "own time by layer:\n\n" + layers_table(layers) + "\n\nSweep (plot below):\n\n" + sweep_table(sweep),
        "rounds": results,
        "sweep": sweep,
        "replicas": {"one": one, "two": two, "ratio": replica_ratio, "rounds": replicas},
        "profile_layers": layers,
        "plots": ["lookup-load.png", "lookup-replicas.png"],
    }


def rounds_line(results: dict[str, list[dict[str, float]]]) -> str:
    """Each wrk round in the order run: a tail that only one round has (the first after a start) shows."""
    rounds = [
        f"{name} {point['requests_per_s']:,.0f}/s, p99 {point['p99_ms']:.1f} ms"
        for both in zip(results["floor"], results["cdap"], strict=True)
        for name, point in zip(("floor", "CDAP"), both, strict=True)
    ]
    return "Rounds at 50 connections, in the order run: " + "; ".join(rounds) + "."


def layers_table(layers: dict[str, float]) -> str:
    lines = ["| layer | share of samples |", "| --- | --- |"]
    lines += [
        f"| {name} | {share * 100:.1f} % |" for name, share in sorted(layers.items(), key=lambda kv: -kv[1])
    ]
    return "\n".join(lines)


def sweep_table(sweep: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| connections | CDAP lookups/s | CDAP p50 ms | CDAP p99 ms | floor lookups/s | floor p50 ms | floor p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c, f in zip(sweep["cdap"], sweep["floor"], strict=True):
        lines.append(
            f"| {c['connections']} | {c['requests_per_s']:.0f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
            f"| {f['requests_per_s']:.0f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} |"
        )
    return "\n".join(lines)
