"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

- wakes on LISTEN/NOTIFY, and when `wake()` is called (the lookups' rows come without a notification:
  `outbox.add_pg` and `GroupAppend` wake the relays of its process directly, `relay_process` carries
  that to a child),
  with a polling fallback (a lost wake only delays, never loses); while rows keep coming, and for a
  `poll_interval` after the last ones, it polls every `busy_poll_interval` (rows staged in another
  replica's process wake no relay here);
- claims rows `FOR UPDATE SKIP LOCKED` in id order and marks them sent in the same transaction, after
  the broker acknowledged them (idempotent producer, `acks=all`);
- hands a claim to the producer as one record batch per partition (`send_batch`), each record in the
  partition `send` would have chosen for its key, in row order;
- publishes with a bare aiokafka producer, not through FastStream's broker: bench/outbox runs both
  relays in the same run, and FastStream's per-record path (command, middlewares, two spans) cost
  about half the relay's throughput (docs/architecture.md, "Delivery");
- one relay per database publishes at a time (a PostgreSQL advisory lock): with several replicas,
  per-key order would otherwise depend on which replica claimed which row;
- a crash between publishing and marking sent republishes the rows: consumers deduplicate by event id;
- each record gets a producer span whose parent is the trace stored with the row, so the trace of a
  request shows when its event left, and the consumer's span is that span's child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter as Tally
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge

from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.outbox import NOTIFY_CHANNEL, traceparent, waking

log = structlog.get_logger(__name__)

PUBLISHED = Counter("cdap_outbox_published_total", "Outbox events published to Kafka", ["topic"])
BACKLOG = Gauge("cdap_outbox_backlog", "Outbox rows not yet published (counted every few seconds)")
tracer = trace.get_tracer("cdap.relay")
# Any constant works; it only has to be the same for every replica of one service.
RELAY_LOCK_KEY = 0x0CDA9_0B0C


# What every CDAP producer runs with: idempotent, `acks=all`, a small linger for batching, zstd (every
# CDAP consumer reads every codec). aiokafka compresses lz4 at level 9: on a relay's batches of
# consultations that cost 10 to 25 µs a record, zstd (level 3) 2 to 7 µs, for 0.07 of the size, not 0.12.
PRODUCER_OPTIONS: dict[str, Any] = {
    "enable_idempotence": True,
    "acks": "all",
    "compression_type": "zstd",
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "request_timeout_ms": 15_000,
}


def make_producer(bootstrap: str, login: KafkaLogin | None = None, **overrides: Any) -> AIOKafkaProducer:
    """A producer with `PRODUCER_OPTIONS`, logged in as `login` (by default the one in
    `CDAP_KAFKA_USERNAME` / `CDAP_KAFKA_PASSWORD`)."""
    options: dict[str, Any] = {
        **(login or KafkaLogin.from_env()).options(),
        "bootstrap_servers": bootstrap,
        **PRODUCER_OPTIONS,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class OutboxRelay:
    """Publishes one database's outbox; `run()` until `stop()`."""

    def __init__(
        self,
        dsn: str,
        bootstrap: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        busy_poll_interval: float = 0.05,
        retry_delay: float = 1.0,
        connect_timeout: float = 10.0,
        login: KafkaLogin | None = None,
    ) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.login = login
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.busy_poll_interval = busy_poll_interval
        self.retry_delay = retry_delay
        self.connect_timeout = connect_timeout
        self.producer: AIOKafkaProducer  # a new one each time the relay (re)connects
        self._partitioner = DefaultPartitioner()  # `make_producer`'s, so a key keeps its partition
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Rows were committed: claim them now rather than at the next poll (several wakes during one
        batch make one more claim after it)."""
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped; survives PostgreSQL and Kafka outages by retrying. The rows this
        process stages with `outbox.add_pg` or `GroupAppend` wake it meanwhile."""
        with waking(self.wake):
            await self._run()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._run_as_leader()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage: log, back off, reconnect
                log.warning("outbox relay interrupted, retrying", error=type(exc).__name__, detail=str(exc))
                await self._sleep(self.retry_delay)

    async def _run_as_leader(self) -> None:
        # Connect to Kafka before taking the lock: a relay that cannot reach the broker must not
        # keep a replica that can from publishing.
        self.producer = make_producer(self.bootstrap, self.login)
        conn: asyncpg.Connection | None = None
        try:
            await asyncio.wait_for(self.producer.start(), self.connect_timeout)
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                await self._sleep(self.poll_interval)  # another replica publishes; stand by
                return
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake())
            log.info("outbox relay publishing")
            loop = asyncio.get_running_loop()
            last_rows = -self.poll_interval
            while not self._stopping.is_set():
                self._wake.clear()
                published = await self.publish_batch(conn)
                if published:
                    last_rows = loop.time()
                if published < self.batch_size:
                    # Busy until a whole `poll_interval` without rows: one empty poll in a stream of
                    # unnotified rows (a pause of the service) would cost the next ones that interval.
                    busy = loop.time() - last_rows < self.poll_interval
                    await self._wait_for_work(self.busy_poll_interval if busy else self.poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _wait_for_work(self, seconds: float) -> None:
        """Until a notification or a wake, or `seconds` (a row staged without either is found at the next
        poll)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def publish_batch(self, conn: asyncpg.Connection) -> int:
        """Claim, publish and mark one batch; returns how many rows it published."""
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers FROM outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            await self.publish(rows)
            await self.mark_sent(conn, [row["id"] for row in rows])
        for topic, count in Tally(row["topic"] for row in rows).items():
            PUBLISHED.labels(topic).inc(count)
        return len(rows)

    async def publish(self, rows: list[asyncpg.Record]) -> None:
        """Publish `rows` and wait until the broker acknowledged every one.

        The rows are appended to one record batch per partition, in row order, and each batch is
        handed over whole (`send_batch`): per record, `send` costs a metadata check, a partitioning, a
        future and its callback, as much again as the record's own span. The partition is the one
        `send` would choose (the producer's partitioner on the key), and batches of one partition go
        out in the order they were handed over, so a key's records keep the outbox's order.
        """
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        handed_over: list[asyncio.Future[Any]] = []
        parents: dict[str, tuple[list[tuple[str, bytes]], Context]] = {}  # one per transaction
        for row in rows:
            topic, key = row["topic"], row["key"].encode()
            if topic not in partitions:
                partitions[topic] = sorted(await self.producer.partitions_for(topic))
            partition = self._partitioner(key, partitions[topic], partitions[topic])
            value, headers = row["payload"], self._traced_headers(topic, row["headers"], parents)
            batch = open_batches.get((topic, partition))
            if batch is None or batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                if batch is not None:  # full: it goes first, the record opens the partition's next one
                    handed_over.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[(topic, partition)] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)  # the first always fits
        for (topic, partition), batch in open_batches.items():
            batch.close()  # complete: the producer sends it without waiting for its linger
            handed_over.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*handed_over)

    def _traced_headers(
        self, topic: str, stored: str, parents: dict[str, tuple[list[tuple[str, bytes]], Context]]
    ) -> list[tuple[str, bytes]]:
        """The record's headers: those stored with the row, with the `traceparent` of a producer span
        whose parent is the trace stored with the row (the consumer's span becomes that span's child)."""
        if stored not in parents:
            carrier = json.loads(stored)
            kept = [(name, value.encode()) for name, value in carrier.items() if name != "traceparent"]
            parents[stored] = (kept, propagate.extract(carrier))
        kept, parent = parents[stored]
        # A span started and ended by hand, not made current: the context manager's attach, detach and
        # wrappers cost as much again as the span itself, on a path that runs once per event.
        span = tracer.start_span(
            f"{topic} publish",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
        )
        span.end()
        # Only `traceparent` changes (the propagator's `inject` took an eighth of the relay's time): a
        # child keeps its parent's `tracestate` and baggage.
        return [*kept, ("traceparent", traceparent(span.get_span_context()).encode())]

    async def mark_sent(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids)


async def count_backlog(pool: asyncpg.Pool) -> None:
    """Set `BACKLOG` to the number of unsent outbox rows (the partial index `ix_outbox_unsent` makes the
    count cheap while the relay keeps up). The runtime runs it every few seconds on every replica, so the
    figure is there whichever replica holds the relay's lock; an outage leaves the last value."""
    BACKLOG.set(await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
