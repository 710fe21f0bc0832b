"""bench/audit: sustained ingestion entries/s into the audit's Merkle log (checkpoints every second),
and the time from a consultation event's publication to its entry being covered by a signed
checkpoint; a bare aiokafka consumer storing the same events with COPY is the baseline.

The audit service runs as a real process (`ServiceProcess`) on fresh topics and a fresh database.
Throughput: N `dossier.consulted` events are pre-published, then the service is started; entries/s
is measured from the first committed entry to a committed tree size of N (`tree_state.size`).
Latency: events published at a fixed rate, each one's send time recorded; `GET /v1/checkpoints/latest`
(JSON, auditor token) is polled every 50 ms, and an event counts as covered at the first poll whose
`tree_size` exceeds its entry's `leaf_index`. The latency therefore includes up to 50 ms of polling.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from bench.common import KAFKA, RESULTS, drop_database, fresh_database, fresh_topic, percentile
from bench.outbox import consultation
from cdap_shared.db import asyncpg_dsn
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import make_producer
from cdap_shared.testing import JwksServer, ServiceProcess, TokenMinter, migrate

Progress = Callable[[str, float], None]
ROOT = Path(__file__).resolve().parents[1]


async def publish(topic: str, start: int, count: int, progress: Progress, phase: str) -> None:
    producer = make_producer(KAFKA)
    await producer.start()
    try:
        pending = []
        for i in range(start, start + count):
            event = consultation(i)
            pending.append(await producer.send(topic, event.to_bytes(), key=event.subject.encode()))
            if i % 1000 == 0:
                progress(phase, (i - start) / count)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def tree_size(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce((SELECT size FROM tree_state WHERE id = 1), 0)"))


async def audit_service(
    url: str, tag: str = "cdap"
) -> tuple[ServiceProcess, dict[str, str], JwksServer, str]:
    """The audit service (not started yet) on `url` and fresh topics; its JWKS server and an auditor token."""
    topics = {
        name: await fresh_topic(f"audit-{name}")
        for name in ("identity", "access", "consultations", "alerts", "checkpoints")
    }
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    token = minter.mint("bench-auditor", roles=["auditor"], ttl=3600)
    service = ServiceProcess(
        "cdap_audit",
        {
            "CDAP_DATABASE_URL": url,
            "CDAP_KAFKA_BOOTSTRAP": KAFKA,
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_IDENTITY_TOPIC": topics["identity"],
            "CDAP_ACCESS_TOPIC": topics["access"],
            "CDAP_CONSULTATIONS_TOPIC": topics["consultations"],
            "CDAP_ALERTS_TOPIC": topics["alerts"],
            "CDAP_CHECKPOINTS_TOPIC": topics["checkpoints"],
            "CDAP_CONSUMER_GROUP": f"bench-audit-{topics['consultations']}",
            "CDAP_CHECKPOINT_INTERVAL": "1.0",
            "CDAP_LOG_LEVEL": "WARNING",
        },
        RESULTS / "logs" / f"audit-{tag}.log",
    )
    return service, topics, jwks, token


async def run_cdap(n: int, rates: list[int], seconds: int, progress: Progress) -> dict[str, Any]:
    url = await fresh_database("audit")
    await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), url)
    service, topics, jwks, token = await audit_service(url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # Throughput: pre-publish, then start the service and watch the committed tree size.
        await publish(topics["consultations"], 0, n, progress, "audit: pre-publishing events")
        await asyncio.to_thread(service.start, 60.0)
        first_t, first_size = 0.0, 0
        deadline = time.perf_counter() + 600
        while (size := await tree_size(conn)) < n:
            if size and not first_t:
                first_t, first_size = time.perf_counter(), size
            if time.perf_counter() > deadline:
                raise RuntimeError(f"audit stuck at tree size {size} of {n}")
            progress("audit: ingestion throughput", size / n)
            await asyncio.sleep(0.05)
        ended = time.perf_counter()
        if not first_t:  # all in before the first sample
            first_t, first_size = ended - 0.05, 0
        throughput = (n - first_size) / (ended - first_t)
        progress("audit: ingestion throughput", 1.0)

        # Latency: publish at a fixed rate, poll the latest checkpoint every 50 ms; one level per rate.
        sweep = []
        for level, rate in enumerate(rates):
            base = await tree_size(conn)
            phase = f"audit: {rate}/s for {seconds}s ({level + 1}/{len(rates)})"
            point = await rate_level(
                conn,
                asyncpg_dsn(url),
                service.url,
                token,
                topics["consultations"],
                base,
                rate,
                seconds,
                phase,
                progress,
            )
            sweep.append(point)
        headline = next((p for p in sweep if p["offered_per_s"] == 500), sweep[0])
        checkpoints = int(await conn.fetchval("SELECT count(*) FROM checkpoint"))
        return {
            "events": n,
            "throughput_entries_per_s": round(throughput, 1),
            "latency_rate_target": headline["offered_per_s"],
            "latency_rate_achieved": headline["achieved_per_s"],
            "latency_events": headline["events"],
            "latency_p50_ms": headline["latency_p50_ms"],
            "latency_p99_ms": headline["latency_p99_ms"],
            "checkpoints_signed": checkpoints,
            "sweep": sweep,
        }
    finally:
        await conn.close()
        service.stop()
        jwks.close()
        await drop_database(url)


QUERY_FOUND = "SELECT count(*) FROM entry WHERE event_id = any($1::text[])"


async def rate_level(
    conn: asyncpg.Connection,
    dsn: str,
    url: str,
    token: str,
    topic: str,
    base: int,
    rate: int,
    seconds: int,
    phase: str,
    progress: Progress,
) -> dict[str, Any]:
    """Publish `rate` events/s for `seconds` on top of a log of `base` entries; wait until all are signed.

    Per event: publish -> committed entry (the database's tree size polled every 50 ms) and publish ->
    first signed checkpoint that covers it (GET /v1/checkpoints/latest polled every 50 ms).
    """
    total = rate * seconds
    sent: dict[str, float] = {}
    signed: list[tuple[float, int]] = []
    committed: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def poll() -> None:
        own = await asyncpg.connect(dsn)  # its own connection: the caller queries `conn` meanwhile
        try:
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
            ) as client:
                while not stop.is_set():
                    r = await client.get("/v1/checkpoints/latest")
                    if r.status_code == 200:
                        signed.append((time.time(), int(r.json()["tree_size"])))
                    committed.append((time.time(), await tree_size(own)))
                    await asyncio.sleep(0.05)
        finally:
            await own.close()

    poller = asyncio.create_task(poll())
    producer = make_producer(KAFKA)
    await producer.start()
    try:
        pending = []
        t0 = time.perf_counter()
        started = time.time()
        per_tick = max(1, rate // 100)
        for k in range(total):
            event = consultation(base + k)
            sent[event.id] = time.time()
            pending.append(await producer.send(topic, event.to_bytes(), key=event.subject.encode()))
            if k % per_tick == per_tick - 1:
                progress(phase, k / total / 2)
                await asyncio.sleep(max(0.0, t0 + (k + 1) / rate - time.perf_counter()))
        await asyncio.gather(*pending)
        achieved = total / (time.perf_counter() - t0)
    finally:
        await producer.stop()
    # Wait for these events' own entries (alerts raised by the rules are entries too, so the tree size
    # alone does not say when they are in), then for a checkpoint covering the last of them.
    deadline = time.perf_counter() + 300
    ids = list(sent)
    while (found := int(await conn.fetchval(QUERY_FOUND, ids))) < total:
        if time.perf_counter() > deadline:
            stop.set()
            raise RuntimeError(f"only {found} of {total} events entered the log")
        progress(phase, 0.5 + found / total / 4)
        await asyncio.sleep(0.25)
    last = int(await conn.fetchval("SELECT max(leaf_index) FROM entry WHERE event_id = any($1::text[])", ids))
    while not signed or signed[-1][1] <= last or committed[-1][1] <= last:
        if time.perf_counter() > deadline:
            stop.set()
            raise RuntimeError("latency events never all covered by a checkpoint")
        progress(phase, 0.8)
        await asyncio.sleep(0.1)
    stop.set()
    await poller
    rows = await conn.fetch(
        "SELECT event_id, leaf_index FROM entry WHERE event_id = any($1::text[])", list(sent)
    )
    to_checkpoint, to_commit = [], []
    for row in rows:
        index = int(row["leaf_index"])
        to_checkpoint.append(next(t for t, size in signed if size > index) - sent[row["event_id"]])
        to_commit.append(next(t for t, size in committed if size > index) - sent[row["event_id"]])
    done = next(t for t, size in committed if size > last)
    progress(phase, 1.0)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(achieved, 1),
        "events": len(rows),
        "ingested_per_s": round(total / (done - started), 1),
        "commit_p50_ms": round(percentile(to_commit, 50) * 1000, 1),
        "commit_p99_ms": round(percentile(to_commit, 99) * 1000, 1),
        "latency_p50_ms": round(percentile(to_checkpoint, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(to_checkpoint, 99) * 1000, 1),
    }


async def run_plain(n: int, progress: Progress) -> dict[str, Any]:
    """The floor: bare aiokafka consumer, each fetched batch stored with one COPY into a plain table."""
    url = await fresh_database("audit_plain")
    topic = await fresh_topic("audit-plain")
    await publish(topic, 0, n, progress, "baseline: pre-publishing events")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.execute(
        "CREATE TABLE entry (leaf_index bigserial PRIMARY KEY, event_id text NOT NULL, type text NOT NULL,"
        " subject text NOT NULL, time timestamptz NOT NULL, data jsonb NOT NULL)"
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=KAFKA,
        **KafkaLogin.from_env().options(),
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        stored, first_t = 0, 0.0
        while stored < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            records = []
            for messages in batches.values():
                for message in messages:
                    body = json.loads(message.value)
                    records.append(
                        (
                            body["id"],
                            body["type"],
                            body["subject"],
                            _parse_time(body["time"]),
                            json.dumps(body["data"]),
                        )
                    )
            if not records:
                continue
            if not first_t:
                first_t = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "entry", records=records, columns=("event_id", "type", "subject", "time", "data")
                )
            await consumer.commit()
            stored += len(records)
            progress("baseline: aiokafka + COPY", stored / n)
        elapsed = time.perf_counter() - first_t
        return {"events": n, "throughput_entries_per_s": round(n / elapsed, 1)}
    finally:
        await consumer.stop()
        await conn.close()
        await drop_database(url)


def _parse_time(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def run(progress: Progress, quick: bool = False) -> dict[str, Any]:
    n, rates, seconds = (3_000, [250, 1000], 3) if quick else (50_000, [100, 250, 500, 750, 1000, 1500], 6)
    baseline = await run_plain(n, progress)
    cdap = await run_cdap(n, rates, seconds, progress)
    sweep = cdap.pop("sweep")
    return {
        "description": f"audit: {n:,} dossier.consulted events ingested into the Merkle log (checkpoint "
        f"every 1 s), then open-loop publishing at {', '.join(map(str, rates))} events/s for {seconds}s each "
        "(publish -> signed checkpoint latency), vs a bare aiokafka consumer + COPY into a plain table",
        "cdap": cdap,
        "baseline": baseline,
        "ratios": {
            "throughput": round(cdap["throughput_entries_per_s"] / baseline["throughput_entries_per_s"], 3),
        },
        "targets": {
            "throughput_entries_per_s": ">= 20,000 entries/s",
            "latency_p99_ms_at_500_per_s": "lookup-to-checkpoint p99 < 1 s at 500/s",
        },
        "notes": "Throughput is timed from the first committed entry to a committed tree size of N (service "
        "start-up excluded), the baseline from its first stored batch. Latency is send time -> first "
        "50 ms poll of GET /v1/checkpoints/latest whose tree_size covers the entry (polling adds up to 50 ms; "
        "checkpoints are signed every second, so about 0.5 s of any figure is the signing interval). "
        "The sweep (plot below) offers each rate for a few seconds on the same service and waits until "
        "everything is signed; `ingested_per_s` is events / (last entry committed - first event sent).\n\n"
        + sweep_table(sweep),
        "sweep": sweep,
        "plots": ["audit-ingestion-load.png"],
    }


def sweep_table(sweep: list[dict[str, Any]]) -> str:
    keys = list(sweep[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(str(p[k]) for k in keys) + " |" for p in sweep]
    return "\n".join(lines)
