"""bench/audit: how fast the audit log takes in a backlog, with distinct actors and with one actor
already holding 200,000 entries in the current hour; how much memory a 1,000,000-entry backlog needs;
and the time from a lookup over HTTP to a signed checkpoint covering it. A bare aiokafka consumer
storing the same events with COPY, measured in the same run, is the baseline of the throughputs.

The audit service runs as a real process (`ServiceProcess`) on fresh topics and a fresh database.
Throughput: the events are pre-published, then the service is started; entries/s is measured from the
first committed entry (for the busy actor, the 200,001st) to a committed tree size of N
(`tree_state.size`), peak RSS from /proc every 0.2 s. Latency: the dossiers service runs for real
(1 uvicorn process, JWKS, grants, policy, outbox, relay) with audit consuming `dossier.consultations`
from its end; lookups are sent over HTTP at a fixed rate, each with its own W3C `traceparent`, so
its entry is found by trace id; `GET /v1/checkpoints/latest` is polled every 50 ms, and a lookup counts
as covered at the first poll whose `tree_size` exceeds its entry's `leaf_index` (up to 50 ms of polling
included). That run also breaks each lookup's time down by stage (`stage_breakdown`), from timestamps
the services keep anyway: the outbox row's `created_at` and `sent_at` (dossiers' database), the
record's Kafka timestamp (set by the relay's producer as it appends the record), the entry's
`recorded_at` (its batch's transaction start), the committed tree size (polled every 20 ms) and the
covering checkpoint's `signed_at`. The same latency for the audit alone: consultations produced straight to its topic at a
fixed rate, each timed from its send to the first polled checkpoint covering it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import lookup
from bench.common import (
    KAFKA,
    RESULTS,
    KeepAliveClient,
    database_url,
    drop_database,
    fresh_database,
    fresh_topic,
    percentile,
)
from bench.outbox import consultation
from cdap_shared import services as registry
from cdap_shared.db import asyncpg_dsn
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import make_producer
from cdap_testing import JwksServer, ServiceProcess, TokenMinter, migrate

Progress = Callable[[str, float], None]
ROOT = Path(__file__).resolve().parents[1]
BUSY = "partner-system-busy"
BUSY_HISTORY = 200_000


def events_bytes(start: int, count: int, actor: str | None = None) -> list[tuple[bytes, bytes]]:
    """(key, value) of consultations `start`..: `bench.outbox.consultation` (500 actors) re-numbered,
    or all by `actor`; built from one template (pydantic for a million events would take minutes)."""
    template = json.loads(consultation(0).to_bytes())
    out = []
    for i in range(start, start + count):
        numero = f"{1_000_000 + i % 900_000:07d}"
        data = template["data"] | {"numero": numero, "actor": actor or f"user-{i % 500}"}
        body = template | {"id": f"bench-{i}-{template['id'][-12:]}", "subject": numero, "data": data}
        out.append((numero.encode(), json.dumps(body, separators=(",", ":")).encode()))
    return out


async def publish(topic: str, n: int, progress: Progress, phase: str, actor: str | None = None) -> None:
    producer = make_producer(KAFKA)
    await producer.start()
    try:
        for chunk in range(0, n, 20_000):
            records = events_bytes(chunk, min(20_000, n - chunk), actor)
            await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
            progress(phase, (chunk + len(records)) / n)
    finally:
        await producer.stop()


async def tree_size(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce((SELECT size FROM tree_state WHERE id = 1), 0)"))


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def audit_service(
    url: str, tag: str = "cdap", consultations: str | None = None
) -> tuple[ServiceProcess, dict[str, str], JwksServer, str]:
    """The audit service (not started yet) on `url` and fresh topics (or `consultations`, read from its
    end); its JWKS server and an auditor token."""
    topics = {
        name: await fresh_topic(f"audit-{name}")
        for name in ("identity", "access", "consultations", "alerts", "checkpoints")
    }
    if consultations is not None:
        topics["consultations"] = consultations
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    token = minter.mint("bench-auditor", roles=["auditor"], ttl=3600)
    service = ServiceProcess(
        registry.service("audit").package,
        {
            "CDAP_DATABASE_URL": url,
            "CDAP_KAFKA_BOOTSTRAP": KAFKA,
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_IDENTITY_TOPIC": topics["identity"],
            "CDAP_ACCESS_TOPIC": topics["access"],
            "CDAP_CONSULTATIONS_TOPIC": topics["consultations"],
            "CDAP_ALERTS_TOPIC": topics["alerts"],
            "CDAP_CHECKPOINTS_TOPIC": topics["checkpoints"],
            "CDAP_CONSUMER_GROUP": f"bench-audit-{topics['alerts'][-10:]}",
            "CDAP_CONSUMER_OFFSET_RESET": "latest" if consultations else "earliest",
            "CDAP_LOG_LEVEL": "WARNING",
        },
        RESULTS / "logs" / f"audit-{tag}.log",
    )
    return service, topics, jwks, token


async def ingest(
    n: int, progress: Progress, phase: str, actor: str | None = None, skip: int = 0
) -> dict[str, Any]:
    """Pre-publish `n` consultations (all by `actor` if given), start the service, time entries
    `skip`..`n`; entries/s and the service's peak RSS."""
    url = await fresh_database("audit")
    await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), url)
    service, topics, jwks, _ = await audit_service(url, tag=phase.split(":")[0].replace(" ", "-"))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await publish(topics["consultations"], n, progress, f"{phase}: pre-publishing", actor)
        await asyncio.to_thread(service.start, 60.0)
        assert service.proc is not None
        first_t, first_size, peak = 0.0, 0, 0.0
        deadline = time.perf_counter() + 3600
        while (size := await tree_size(conn)) < n:
            peak = max(peak, rss_mib(service.proc.pid))
            if size > skip and not first_t:
                first_t, first_size = time.perf_counter(), size
            if time.perf_counter() > deadline:
                raise RuntimeError(f"audit stuck at tree size {size} of {n}")
            progress(phase, size / n)
            await asyncio.sleep(0.2)
        ended = time.perf_counter()
        peak = max(peak, rss_mib(service.proc.pid))
        if not first_t:  # all in before the first sample
            first_t, first_size = ended - 0.2, skip
        progress(phase, 1.0)
        return {
            "entries_per_s": round((n - first_size) / (ended - first_t), 1),
            "peak_rss_mib": round(peak, 1),
        }
    finally:
        await conn.close()
        service.stop()
        jwks.close()
        await drop_database(url)


async def poll_checkpoints(
    url: str, token: str, signed: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    """Append (time, tree size) of `GET /v1/checkpoints/latest` every 50 ms until `stop`."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        while not stop.is_set():
            r = await client.get("/v1/checkpoints/latest")
            if r.status_code == 200:
                signed.append((time.time(), int(r.json()["tree_size"])))
            await asyncio.sleep(0.05)


async def poll_committed(url: str, committed: list[tuple[float, int]], stop: asyncio.Event) -> None:
    """Append (time, committed tree size) every 20 ms until `stop`: when each entry was committed."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        while not stop.is_set():
            committed.append((time.time(), await tree_size(conn)))
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


CONSULTATIONS = "dossier.consultations"
STAGES = (
    ("http_answer", "sent", "answered"),
    ("to_outbox_row", "sent", "row_created"),
    ("outbox_to_relay_claim", "row_created", "claimed"),
    ("relay_claim_to_kafka", "claimed", "kafka"),
    ("kafka_to_audit_batch", "kafka", "batch_started"),
    ("audit_batch_to_commit", "batch_started", "committed"),
    ("commit_to_signed", "committed", "signed"),
    ("signed_to_polled", "signed", "covered"),
)


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    """The end offset of each partition of `topic` now."""
    # Subscribed (no group: nothing is committed), the consumer fetches the topic's metadata at start.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, **KafkaLogin.from_env().options())
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic) or set()
        return dict(await consumer.end_offsets([TopicPartition(topic, p) for p in numbers]))
    finally:
        await consumer.stop()


async def kafka_times(topic: str, start: dict[TopicPartition, int]) -> dict[str, float]:
    """Trace id -> Kafka record timestamp (s) of the records of `topic` from `start` to the end now."""
    end = await end_offsets(topic)
    # A group of its own (never committed): without one, aiokafka's `stop()` after `assign()` raises
    # CancelledError.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        **KafkaLogin.from_env().options(),
        group_id=f"bench-audit-stages-{secrets.token_hex(4)}",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: dict[str, float] = {}
    try:
        wanted = {tp: offset for tp, offset in end.items() if offset > start.get(tp, 0)}
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        while wanted:
            for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).items():
                for record in records:
                    parent = dict(record.headers or ()).get("traceparent", b"").decode()
                    if parent:
                        out[parent.split("-")[1]] = record.timestamp / 1000
                if records and records[-1].offset + 1 >= wanted.get(tp, 0):
                    wanted.pop(tp, None)
    finally:
        await consumer.stop()
    return out


async def stage_breakdown(
    audit_url: str,
    since: float,
    start: dict[TopicPartition, int],
    times: dict[str, dict[str, float]],
    committed: list[tuple[float, int]],
    signed: list[tuple[float, int]],
) -> dict[str, Any]:
    """p50/p99/max (ms) of each stage of a lookup's way to a checkpoint (`STAGES`), over the lookups
    whose two timestamps of it were found; `times` holds trace id -> {"sent", "answered"} on entry, and
    gets the others. `BENCH_AUDIT_TIMES=<file>` writes them all there as JSON."""
    dossiers = await asyncpg.connect(asyncpg_dsn(database_url(lookup.DB)))
    audit = await asyncpg.connect(asyncpg_dsn(audit_url))
    try:
        rows = await dossiers.fetch(
            "SELECT headers->>'traceparent' AS parent, extract(epoch FROM created_at) AS created,"
            " extract(epoch FROM sent_at) AS claimed FROM outbox"
            " WHERE topic = $1 AND created_at >= to_timestamp($2)",
            CONSULTATIONS,
            since - 1,
        )
        for row in rows:
            trace = (row["parent"] or "--").split("-")[1]
            if trace in times and row["claimed"] is not None:
                times[trace] |= {"row_created": float(row["created"]), "claimed": float(row["claimed"])}
        entries = await audit.fetch(
            "SELECT trace_id, leaf_index, extract(epoch FROM recorded_at) AS started FROM entry"
            " WHERE trace_id = any($1::text[])",
            list(times),
        )
        checkpoints = await audit.fetch(
            "SELECT tree_size, extract(epoch FROM signed_at) AS signed FROM checkpoint ORDER BY tree_size"
        )
    finally:
        await dossiers.close()
        await audit.close()
    for trace, fetched in (await kafka_times(CONSULTATIONS, start)).items():
        if trace in times:
            times[trace]["kafka"] = fetched
    for entry in entries:
        leaf, at = int(entry["leaf_index"]), times[entry["trace_id"]]
        at["batch_started"] = float(entry["started"])
        at["committed"] = next((t for t, size in committed if size > leaf), float("nan"))
        at["signed"] = next(float(c["signed"]) for c in checkpoints if c["tree_size"] > leaf)
        at["covered"] = next(t for t, size in signed if size > leaf)
    if dump := os.environ.get("BENCH_AUDIT_TIMES"):
        Path(dump).write_text(json.dumps(times))  # every lookup's timestamps, for a closer look
    out: dict[str, Any] = {}
    for name, begin, end in STAGES:
        spans = [at[end] - at[begin] for at in times.values() if begin in at and end in at]
        spans = [span for span in spans if span == span]  # a commit after the last poll: NaN
        out[name] = {
            "p50_ms": round(percentile(spans, 50) * 1000, 1) if spans else None,
            "p99_ms": round(percentile(spans, 99) * 1000, 1) if spans else None,
            "max_ms": round(max(spans) * 1000, 1) if spans else None,
            "lookups": len(spans),
        }
    return out


async def times_to_checkpoint(
    conn: asyncpg.Connection,
    column: str,
    sent: dict[str, float],
    signed: list[tuple[float, int]],
    progress: Callable[[float], None],
) -> list[float]:
    """For each entry whose `column` is a key of `sent`: seconds from its sending to the first polled
    checkpoint covering its leaf index (waits until every one is in the log and covered)."""
    keys = list(sent)
    deadline = time.perf_counter() + 300
    query = f"SELECT {column} AS key, leaf_index FROM entry WHERE {column} = any($1::text[])"
    while len(rows := await conn.fetch(query, keys)) < len(keys):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {len(rows)} of {len(keys)} events entered the audit log")
        progress(len(rows) / len(keys))
        await asyncio.sleep(0.25)
    last = max(int(r["leaf_index"]) for r in rows)
    while not signed or signed[-1][1] <= last:
        if time.perf_counter() > deadline:
            raise RuntimeError("events never all covered by a checkpoint")
        await asyncio.sleep(0.1)
    return [next(t for t, size in signed if size > r["leaf_index"]) - sent[r["key"]] for r in rows]


async def paced(
    rate: int, seconds: int, send: Callable[[int], Awaitable[Awaitable[Any]]], report: Callable[[float], None]
) -> float:
    """Call `send(k)` for k = 0.. at `rate` per second for `seconds`; each call gives what to wait for
    once all are sent (a delivery, a request). Returns the rate achieved."""
    total, pending = rate * seconds, []
    t0 = time.perf_counter()
    for k in range(total):
        pending.append(await send(k))
        if k % 100 == 0:
            report(k / total)
        await asyncio.sleep(max(0.0, t0 + (k + 1) / rate - time.perf_counter()))
    await asyncio.gather(*pending)
    return total / (time.perf_counter() - t0)


def latencies(covered: list[float], rate: int, achieved: float) -> dict[str, Any]:
    """The figures of a paced run: offered and achieved rates, p50, p99 and max."""
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(achieved, 1),
        "p50_ms": round(percentile(covered, 50) * 1000, 1),
        "p99_ms": round(percentile(covered, 99) * 1000, 1),
        "max_ms": round(max(covered) * 1000, 1),
    }


async def produced_to_checkpoint(rate: int, seconds: int, progress: Progress) -> dict[str, Any]:
    """The audit side alone: consultations produced straight to its topic at `rate`/s for `seconds`
    (no dossiers service); each one's time from its send to the first signed checkpoint covering it."""
    phase = f"events produced, {rate}/s for {seconds}s"
    url = await fresh_database("audit")
    await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), url)
    audit, topics, jwks, auditor = await audit_service(url, "produced")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    producer = make_producer(KAFKA)
    sent: dict[str, float] = {}
    signed: list[tuple[float, int]] = []
    stop = asyncio.Event()
    try:
        await producer.start()
        await asyncio.to_thread(audit.start, 60.0)
        poller = asyncio.create_task(poll_checkpoints(audit.url, auditor, signed, stop))
        # One event first, timed from nowhere: the consumer has joined its group once it is signed.
        ((key, value),) = events_bytes(rate * seconds, 1)
        await (await producer.send(topics["consultations"], value, key=key))
        while not signed or signed[-1][1] < 1:
            await asyncio.sleep(0.1)

        async def send(k: int) -> Awaitable[Any]:
            ((key, value),) = events_bytes(k, 1)
            sent[json.loads(value)["id"]] = time.time()
            delivery: Awaitable[Any] = await producer.send(topics["consultations"], value, key=key)
            return delivery

        achieved = await paced(rate, seconds, send, lambda f: progress(phase, f / 2))
        covered = await times_to_checkpoint(
            conn, "event_id", sent, signed, lambda f: progress(phase, 0.5 + f / 2)
        )
        stop.set()
        await poller
        progress(phase, 1.0)
        return {**latencies(covered, rate, achieved), "events": len(covered)}
    finally:
        stop.set()
        await producer.stop()
        await conn.close()
        audit.stop()
        jwks.close()
        await drop_database(url)


async def lookup_to_checkpoint(rate: int, seconds: int, progress: Progress) -> dict[str, Any]:
    """Lookups over HTTP at `rate`/s for `seconds` against the dossiers service; each one's time to the
    first signed checkpoint covering its audit entry."""
    phase = f"lookups over HTTP, {rate}/s for {seconds}s"
    await lookup.load_dossiers(lookup.SMALL, progress)
    url = await fresh_database("audit")
    await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), url)
    audit, _, audit_jwks, auditor = await audit_service(url, "latency", consultations="dossier.consultations")
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    tokens = [
        minter.mint(
            f"bench-user-{i}", grants=[{"id": f"g-{i}", "profile": "T1", "department": "76"}], ttl=3600
        )
        for i in range(lookup.USERS)
    ]
    topics = {
        "CDAP_CAF_TOPIC": await fresh_topic("lookup-caf"),
        "CDAP_IDENTITY_TOPIC": await fresh_topic("lookup-identity"),
    }
    dossiers = ServiceProcess(
        registry.service("dossiers").package,
        lookup.cdap_env(jwks.url, topics),
        RESULTS / "logs" / "audit-dossiers.log",
    )
    conn = await asyncpg.connect(asyncpg_dsn(url))
    sent: dict[str, float] = {}
    times: dict[str, dict[str, float]] = {}
    failed = 0
    signed: list[tuple[float, int]] = []
    committed: list[tuple[float, int]] = []
    stop = asyncio.Event()
    try:
        start = await end_offsets(CONSULTATIONS)
        since = time.time()
        await asyncio.to_thread(audit.start, 60.0)
        await asyncio.to_thread(dossiers.start, 60.0)
        await asyncio.sleep(3)  # the audit consumer joins its group (it reads from the topic's end)

        async def one(client: KeepAliveClient, k: int) -> None:
            nonlocal failed
            trace = secrets.token_hex(16)
            headers = {
                "Authorization": f"Bearer {tokens[k % len(tokens)]}",
                "traceparent": f"00-{trace}-{secrets.token_hex(8)}-01",
            }
            numero = lookup.FIRST + (k * 7919) % lookup.SMALL
            t = time.time()
            try:
                status = await client.get(f"/v1/dossiers/{numero}?motif=accompagnement_social", headers)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                failed += 1  # an overloaded server dropping the connection: no answer, no entry to wait for
                return
            if status == 200:
                sent[trace] = t
                times[trace] = {"sent": t, "answered": time.time()}
            else:
                failed += 1

        poller = asyncio.create_task(poll_checkpoints(audit.url, auditor, signed, stop))
        committer = asyncio.create_task(poll_committed(url, committed, stop))
        async with KeepAliveClient(dossiers.url, connections=100) as client:

            async def send(k: int) -> Awaitable[Any]:
                return asyncio.create_task(one(client, k))

            achieved = await paced(rate, seconds, send, lambda f: progress(phase, f / 2))
        covered = await times_to_checkpoint(
            conn, "trace_id", sent, signed, lambda f: progress(phase, 0.5 + f / 4)
        )
        stop.set()
        await asyncio.gather(poller, committer)
        stages = await stage_breakdown(url, since, start, times, committed, signed)
        progress(phase, 1.0)
        return {
            **latencies(covered, rate, achieved),
            "lookups": len(covered),
            "failed": failed,
            "stages": stages,
        }
    finally:
        stop.set()
        await conn.close()
        dossiers.stop()
        audit.stop()
        jwks.close()
        audit_jwks.close()
        await drop_database(url)


async def run_plain(n: int, progress: Progress, label: str = "baseline") -> dict[str, Any]:
    """The floor: bare aiokafka consumer, each fetched batch stored with one COPY into a plain table."""
    url = await fresh_database("audit_plain")
    topic = await fresh_topic("audit-plain")
    await publish(topic, n, progress, f"{label}: pre-publishing events")
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
            progress(f"{label}: aiokafka + COPY", stored / n)
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
    n, backlog, history, seconds = sizes(quick)
    measured = await measure(PARTS, quick, progress)
    distinct, busy, large, produced, latency = (measured[name] for name in PARTS)
    return {
        "description": f"audit: {n:,} dossier.consulted events taken in from a backlog with 500 distinct actors, "
        f"then {n:,} more by one actor already holding {history:,} entries in the current hour; "
        f"a {backlog:,}-entry backlog (peak memory); lookups over HTTP at 500/s for {seconds} s to a "
        "signed checkpoint. Baseline: a bare aiokafka consumer + COPY into a plain table.",
        "cdap": {
            "throughput_distinct_actors_entries_per_s": distinct["entries_per_s"],
            "throughput_busy_actor_entries_per_s": busy["entries_per_s"],
            f"backlog_{backlog}_entries_per_s": large["entries_per_s"],
            f"backlog_{backlog}_peak_rss_mib": large["peak_rss_mib"],
            "lookup_to_checkpoint_p50_ms": latency["p50_ms"],
            "lookup_to_checkpoint_p99_ms_at_500_per_s": latency["p99_ms"],
            "lookups_achieved_per_s": latency["achieved_per_s"],
            "produced_to_checkpoint_p50_ms": produced["p50_ms"],
            "produced_to_checkpoint_p99_ms_at_500_per_s": produced["p99_ms"],
            "events_produced_per_s": produced["achieved_per_s"],
        },
        "baseline": {
            "throughput_distinct_actors_entries_per_s": statistics.mean(distinct["baseline_entries_per_s"]),
            "throughput_busy_actor_entries_per_s": statistics.mean(busy["baseline_entries_per_s"]),
            f"backlog_{backlog}_entries_per_s": statistics.mean(large["baseline_entries_per_s"]),
        },
        "ratios": {
            "throughput_distinct_actors": distinct["ratio"],
            "throughput_busy_actor": busy["ratio"],
        },
        "targets": {
            "throughput_distinct_actors": ">= 10,000 entries/s, ratio >= 0.3",
            "throughput_busy_actor": ">= 10,000 entries/s, ratio >= 0.3",
            f"backlog_{backlog}_peak_rss": "< 500 MB",
            "lookup_to_checkpoint_p99": "< 1 s at 500 lookups/s for 60 s",
            "produced_to_checkpoint_p99": "< 1 s at 500 events/s (audit alone)",
        },
        "notes": "Throughput is timed from the first committed entry (busy actor: the first after its "
        f"{history:,} earlier ones) to a committed tree size of N, service start-up excluded; the baseline "
        "from its first stored batch, measured right before and right after each throughput case (its "
        "column is the mean of the two, `details.<case>.baseline_entries_per_s` both). Peak RSS is the "
        "audit process's VmRSS sampled every 0.2 s. The lookup "
        f"latency run: {latency['lookups']} lookups answered 200 ({latency['failed']} not), offered at "
        f"500/s, achieved {latency['achieved_per_s']}/s, max {latency['max_ms']} ms; a checkpoint is signed "
        "when a batch commits, at most one per 0.1 s (the default `CDAP_CHECKPOINT_MIN_GAP`), so up to 0.1 s "
        "of any figure is the wait for the next signing; `details.latency.stages` breaks it down by stage. The audit-alone run "
        f"produces {produced['events']} consultations straight to the audit's topic at 500/s (achieved "
        f"{produced['achieved_per_s']}/s; no dossiers service): max {produced['max_ms']} ms.",
        "details": {
            "distinct": distinct,
            "busy": busy,
            "backlog": large,
            "latency": latency,
            "produced": produced,
        },
    }


PARTS = ("distinct", "busy", "backlog", "produced", "lookup")
THROUGHPUT = ("distinct", "busy", "backlog")  # the parts measured against the floor


def sizes(quick: bool) -> tuple[int, int, int, int]:
    """Events per throughput case, backlog, busy actor's history, seconds of paced load."""
    n, backlog, history = (5_000, 20_000, 20_000) if quick else (50_000, 1_000_000, BUSY_HISTORY)
    return n, backlog, history, int(os.environ.get("BENCH_AUDIT_SECONDS", 10 if quick else 60))


async def measure(names: Sequence[str], quick: bool, progress: Progress) -> dict[str, Any]:
    """The named `PARTS`, with the baseline whenever a throughput is measured (and each one's ratio to
    it) and the load average at the end. `python -m bench.audit distinct produced` runs a few of them
    without the whole benchmark (about 30 minutes) and prints them, writing no result file."""
    n, backlog, history, seconds = sizes(quick)
    parts: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "distinct": lambda: ingest(n, progress, "distinct actors"),
        "busy": lambda: ingest(history + n, progress, "one busy actor", actor=BUSY, skip=history),
        "backlog": lambda: ingest(backlog, progress, f"{backlog:,}-entry backlog"),
        "produced": lambda: produced_to_checkpoint(500, seconds, progress),
        "lookup": lambda: lookup_to_checkpoint(500, seconds, progress),
    }
    out: dict[str, Any] = {}
    for name in names:
        if name not in THROUGHPUT:
            out[name] = await parts[name]()
            continue
        # The floor right before and right after each throughput part, and the part against their mean:
        # one floor for the whole run put a 3-second part next to a floor taken minutes away from it,
        # and this machine's rate moved by up to a third within a minute (1-2 December runs).
        before = await run_plain(n, progress, f"baseline before {name}")
        out[name] = await parts[name]()
        after = await run_plain(n, progress, f"baseline after {name}")
        floors = [before["throughput_entries_per_s"], after["throughput_entries_per_s"]]
        out[name]["baseline_entries_per_s"] = floors
        out[name]["ratio"] = round(out[name]["entries_per_s"] / statistics.mean(floors), 3)
    out["load_average"] = os.getloadavg()
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run parts of bench/audit; prints JSON, writes no file.")
    parser.add_argument("parts", nargs="+", choices=PARTS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.parts, args.quick, lambda phase, fraction: None)), indent=2))
