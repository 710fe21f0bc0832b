"""bench/outbox: events/s through outbox -> relay -> Kafka -> inbox consumer, PostgreSQL on both sides,
and end-to-end latency at a fixed rate; a bare aiokafka produce -> consume loop is the baseline.

Producer side (domain transactions + relay) runs in this process, the consumer in another, as two
services would. Throughput: N events written as fast as 4 writers can, in transactions of 100,
until the consumer has applied the last one, with the CPU time each side spent per event (this process:
the writers and the relay; the consumer's). Latency: events written at a fixed rate (20 per
transaction every 10 ms = 2,000/s), from the event's creation to the consumer's apply time.
The pipeline runs twice: with CDAP's relay (a bare aiokafka producer), then with a relay publishing
through FastStream's broker set up as a service's, so the cost of FastStream's path is measured in the
same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry import context, propagate
from prometheus_client import CollectorRegistry

from bench.common import KAFKA, RESULTS, drop_database, fresh_database, fresh_topic, percentile
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.db import asyncpg_dsn, create_engine, create_tables, session_factory
from cdap_shared.envelope import CloudEvent
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.relay import PRODUCER_OPTIONS, OutboxRelay, make_producer
from cdap_shared.telemetry import configure_tracing

Progress = Callable[[str, float], None]


def service_broker() -> KafkaBroker:
    """A broker set up as a service's (`ServiceRuntime`): producer options, tracing and metrics middlewares."""
    return KafkaBroker(
        KAFKA,
        security=KafkaLogin.from_env().security(),
        middlewares=[
            KafkaTelemetryMiddleware(tracer_provider=configure_tracing("bench")),
            KafkaPrometheusMiddleware(registry=CollectorRegistry(), app_name="bench"),
        ],
        logger=None,
        **PRODUCER_OPTIONS,
    )


class FastStreamRelay(OutboxRelay):
    """The relay publishing through FastStream instead of its bare producer, on a broker set up as a
    service's: each row by `broker.publish(..., no_confirm=True)` inside the trace stored with it, the
    telemetry middleware making the producer spans. It prices that path in every run."""

    def __init__(self, dsn: str, bootstrap: str, **options: Any) -> None:
        super().__init__(dsn, bootstrap, **options)
        self.broker = service_broker()

    async def run(self) -> None:
        await self.broker.start()
        try:
            await super().run()
        finally:
            await self.broker.stop()

    async def publish(self, rows: list[asyncpg.Record]) -> None:
        acknowledgements = []
        for row in rows:
            headers = json.loads(row["headers"])
            token = context.attach(propagate.extract(headers))  # the request that wrote the row
            try:
                acknowledgements.append(
                    await self.broker.publish(
                        row["payload"],
                        row["topic"],
                        key=row["key"].encode(),
                        headers=headers,
                        no_confirm=True,
                    )
                )
            finally:
                context.detach(token)
        await asyncio.gather(*acknowledgements)


def consultation(i: int) -> CloudEvent:
    numero = f"{1_000_000 + i % 900_000:07d}"
    data = ev.DossierConsulted(
        actor=f"user-{i % 500}",
        organisation_id="org-1",
        profile="T1",
        grant_id=f"g-{i % 500}",
        numero=numero,
        motif="accompagnement_social",
        decision="granted",
        sections=["adresse", "foyer", "identite"],
        policy_version="2026.11-1",
        client_ip="127.0.0.1",
        trace_id="0" * 32,
    )
    return ev.make_event("dossier.consulted", source="/bench", subject=numero, data=data)


async def _spawn_consumer(mode: str, topic: str, *args: str) -> asyncio.subprocess.Process:
    """bench/outbox_consumer in `mode` on `topic` (its own group), once it says it is ready."""
    RESULTS.mkdir(exist_ok=True)
    log = (RESULTS / "consumer.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.outbox_consumer",
        *("--mode", mode, "--kafka", KAFKA, "--topic", topic, "--group", f"g-{topic}"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError("the consumer process did not start")
    await asyncio.sleep(2)  # let it join its group and get partitions
    return proc


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM bench_effect"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def run_cdap(
    n_throughput: int,
    rate: int,
    seconds: int,
    progress: Progress,
    relay_class: type[OutboxRelay] = OutboxRelay,
) -> dict[str, Any]:
    """The pipeline with `relay_class` publishing, traced as in a service."""
    producer_url, consumer_url = await fresh_database("outbox_p"), await fresh_database("outbox_c")
    engine = create_engine(producer_url, 8)
    await create_tables(engine)
    sessions = session_factory(engine)
    topic = await fresh_topic("outbox")
    consumer = await _spawn_consumer("cdap", topic, "--database-url", consumer_url)
    configure_tracing("bench")  # spans are recorded, as in a service
    relay = relay_class(asyncpg_dsn(producer_url), KAFKA, batch_size=2000, poll_interval=0.05)
    relay_task = asyncio.create_task(relay.run())
    label = "" if relay_class is OutboxRelay else " (through FastStream)"
    consumer_dsn = asyncpg_dsn(consumer_url)
    try:
        # Throughput.
        events = [consultation(i) for i in range(n_throughput)]
        started = time.perf_counter()
        # CPU per event on each side: a figure the machine's load moves less than the rates.
        cpu_here, cpu_consumer = time.process_time(), _cpu_seconds(consumer.pid)

        async def writer(chunk: list[CloudEvent]) -> None:
            for i in range(0, len(chunk), 100):
                async with sessions() as session, session.begin():
                    await outbox.add_all(session, chunk[i : i + 100], topic=topic)

        writers = asyncio.gather(*(writer(events[k::4]) for k in range(4)))
        while (done := await _count(consumer_dsn)) < n_throughput:
            progress(f"outbox pipeline{label}: throughput", done / n_throughput)
            await asyncio.sleep(0.2)
        await writers
        elapsed = time.perf_counter() - started
        throughput = n_throughput / elapsed
        cpu_us_per_event = {
            "cpu_us_per_event_writers_and_relay": round(
                (time.process_time() - cpu_here) / n_throughput * 1e6, 1
            ),
            "cpu_us_per_event_consumer": round(
                (_cpu_seconds(consumer.pid) - cpu_consumer) / n_throughput * 1e6, 1
            ),
        }

        # Latency at a fixed rate.
        per_tick = rate // 100  # one transaction every 10 ms
        total = rate * seconds
        written = 0
        t0 = time.perf_counter()
        while written < total:
            async with sessions() as session, session.begin():
                batch = [consultation(n_throughput + written + k) for k in range(per_tick)]
                await outbox.add_all(session, batch, topic=topic)
                written += per_tick
            progress(f"outbox pipeline{label}: latency at fixed rate", written / total / 2)
            await asyncio.sleep(max(0.0, t0 + written / rate - time.perf_counter()))
        achieved = total / (time.perf_counter() - t0)
        while (done := await _count(consumer_dsn)) < n_throughput + total:
            progress(
                f"outbox pipeline{label}: latency at fixed rate", 0.5 + (done - n_throughput) / total / 2
            )
            await asyncio.sleep(0.2)
        conn = await asyncpg.connect(consumer_dsn)
        try:
            rows = await conn.fetch(
                "SELECT extract(epoch FROM applied_at - created) AS s FROM bench_effect "
                "ORDER BY created OFFSET $1",
                n_throughput,
            )
        finally:
            await conn.close()
        latencies = [float(r["s"]) for r in rows]
        return {
            "events": n_throughput,
            "throughput_events_per_s": round(throughput, 1),
            **cpu_us_per_event,
            "latency_rate_target": rate,
            "latency_rate_achieved": round(achieved, 1),
            "latency_events": len(latencies),
            "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        }
    finally:
        relay.stop()
        await asyncio.wait_for(relay_task, 10)
        consumer.terminate()
        await consumer.wait()
        await engine.dispose()
        await drop_database(producer_url)
        await drop_database(consumer_url)


async def run_plain(n_throughput: int, rate: int, seconds: int, progress: Progress) -> dict[str, Any]:
    """The floor: produce JSON envelopes with aiokafka (same producer settings) and consume them."""
    results: dict[str, Any] = {}
    for phase, count in (("throughput", n_throughput), ("latency", rate * seconds)):
        topic = await fresh_topic(f"plain-{phase}")
        consumer = await _spawn_consumer("plain", topic, "--expect", str(count))
        producer = make_producer(KAFKA)
        await producer.start()
        template = json.loads(consultation(0).to_bytes())
        started, wall_start = time.perf_counter(), time.time()
        try:
            pending = []
            for i in range(count):
                template["data"]["sent"] = time.time()
                pending.append(
                    await producer.send(topic, json.dumps(template).encode(), key=str(i % 900_000).encode())
                )
                if phase == "latency" and i % (rate // 100) == rate // 100 - 1:
                    await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
                if i % 1000 == 0:
                    progress(f"baseline aiokafka: {phase}", i / count)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        assert consumer.stdout is not None
        out = json.loads(await asyncio.wait_for(consumer.stdout.read(), 300))
        await consumer.wait()
        latencies = out["latencies"]
        if phase == "throughput":
            results["throughput_events_per_s"] = round(count / (out["last"] - wall_start), 1)
        else:
            results["latency_p50_ms"] = round(percentile(latencies, 50) * 1000, 1)
            results["latency_p99_ms"] = round(percentile(latencies, 99) * 1000, 1)
    return results


async def run(progress: Progress, quick: bool = False) -> dict[str, Any]:
    n, rate, seconds = (5_000, 2_000, 3) if quick else (50_000, 2_000, 10)
    baseline = await run_plain(n, rate, seconds, progress)
    cdap = await run_cdap(n, rate, seconds, progress)
    faststream = await run_cdap(n, rate, seconds, progress, FastStreamRelay)
    return {
        "description": "outbox -> relay -> Kafka -> inbox consumer (PostgreSQL both sides) vs bare aiokafka",
        "cdap": cdap,
        "cdap_through_faststream": faststream,
        "baseline": baseline,
        "ratios": {
            "throughput": round(cdap["throughput_events_per_s"] / baseline["throughput_events_per_s"], 3),
            "latency_p99": round(cdap["latency_p99_ms"] / max(baseline["latency_p99_ms"], 0.1), 2),
            "faststream_to_cdap_throughput": round(
                faststream["throughput_events_per_s"] / cdap["throughput_events_per_s"], 3
            ),
        },
        "targets": {"throughput_events_per_s": 10_000, "latency_p99_ms_at_2000_per_s": 250},
        "notes": (
            f"The same pipeline with the relay publishing through FastStream's broker, in this run: "
            f"{faststream['throughput_events_per_s']} events/s, p99 {faststream['latency_p99_ms']} ms at "
            f"{faststream['latency_rate_achieved']}/s (FastStream / bare producer: "
            f"{faststream['throughput_events_per_s'] / cdap['throughput_events_per_s']:.2f} in throughput)."
        ),
    }
