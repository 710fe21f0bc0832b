"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

- wakes on LISTEN/NOTIFY, with a polling fallback (a lost notification only delays, never loses);
- claims rows `FOR UPDATE SKIP LOCKED` in id order and marks them sent in the same transaction, after
  the broker acknowledged them (idempotent producer, `acks=all`);
- one relay per database publishes at a time (a PostgreSQL advisory lock): with several replicas,
  per-key order would otherwise depend on which replica claimed which row;
- a crash between publishing and marking sent republishes the rows: consumers deduplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from cdap_shared.outbox import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)

PUBLISHED = Counter("cdap_outbox_published_total", "Outbox events published to Kafka", ["topic"])
PENDING = Gauge("cdap_outbox_pending", "Outbox rows not yet published at the last claim")
# Any constant works; it only has to be the same for every replica of one service.
RELAY_LOCK_KEY = 0x0CDA9_0B0C


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """The producer every CDAP publisher uses: idempotent, `acks=all`, small linger for batching, lz4
    (every CDAP consumer reads every codec; a batch of consultations shrinks about fourfold)."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "compression_type": "lz4",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15_000,
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
        retry_delay: float = 1.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.connect_timeout = connect_timeout
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped; survives PostgreSQL and Kafka outages by retrying."""
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
        producer = make_producer(self.bootstrap)
        conn: asyncpg.Connection | None = None
        try:
            await asyncio.wait_for(producer.start(), self.connect_timeout)
            conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                await self._sleep(self.poll_interval)  # another replica publishes; stand by
                return
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            log.info("outbox relay publishing")
            while not self._stopping.is_set():
                self._wake.clear()
                if await self.publish_batch(conn, producer) < self.batch_size:
                    await self._wait_for_work()
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def publish_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Claim, publish and mark one batch; returns how many rows it published."""
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers FROM outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                PENDING.set(0)
                return 0
            futures = []
            for row in rows:
                headers = json.loads(row["headers"]) if isinstance(row["headers"], str) else row["headers"]
                futures.append(
                    await producer.send(
                        row["topic"],
                        value=row["payload"],
                        key=row["key"].encode(),
                        headers=[(k, v.encode()) for k, v in (headers or {}).items()],
                    )
                )
            await asyncio.gather(*futures)
            await self.mark_sent(conn, [row["id"] for row in rows])
        for row in rows:
            PUBLISHED.labels(row["topic"]).inc()
        PENDING.set(len(rows))
        return len(rows)

    async def mark_sent(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids)
