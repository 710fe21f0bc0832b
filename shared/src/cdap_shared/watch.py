"""Is each consumer keeping up? Lag per partition, time since its last progress, and a verdict for /ready.

A consumer that has records waiting and has committed nothing for `stall_after` seconds is stalled: it
is named (group and topics) by `/ready`, which then answers 503, and an error is logged once saying
why, and again when it moves. Progress is read from the group's committed offsets, so a consumer whose
batches keep failing (rewound and retried) is stalled too, not busy.

A consumer whose Kafka client has stopped fetching for good (aiokafka's fetch routine ended on an error
it did not expect) is restarted at the next check, logged and counted in `cdap_consumer_restarts_total`:
a restart would not help a failing batch, so only that case is restarted.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from cdap_shared.consumer import EventConsumer, describe
from cdap_shared.http import NotReady
from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.periodic import Periodic

log = structlog.get_logger(__name__)

LAG = Gauge("cdap_consumer_lag", "Records behind the log end", ["group", "topic", "partition"])
SINCE_PROGRESS = Gauge(
    "cdap_consumer_seconds_since_progress",
    "Seconds since the group last committed progress while records were waiting (0 when caught up)",
    ["group"],
)
STALLED = Gauge(
    "cdap_consumer_stalled", "1 when the group has records waiting and makes no progress", ["group"]
)
RESTARTS = Counter(
    "cdap_consumer_restarts_total", "Consumers restarted: their Kafka client stopped fetching", ["group"]
)


class ConsumerStalled(NotReady):
    """Raised by the readiness check; its text names the consumer group, topics and partitions."""


@dataclass
class _GroupState:
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    waiting: dict[TopicPartition, int] = field(default_factory=dict)
    last_progress: float = field(default_factory=time.monotonic)
    stalled: bool = False
    # Wall-clock times (what a reader is told): the last sample, and the last one with nothing waiting.
    sampled_at: float | None = None
    caught_up_at: float | None = None


@dataclass(frozen=True)
class Freshness:
    """How complete a group's reading is, as the watch last saw it: everything published before `as_of`
    was read (None: not caught up once since the process started); `waiting` records were not yet."""

    as_of: datetime | None
    caught_up: bool
    waiting: int
    stalled: bool


@dataclass(frozen=True)
class PartitionLag:
    """One partition's position as the watch last saw it."""

    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


class ConsumerWatch:
    """Samples every consumer of a process every `interval` seconds (`periodic()`, run by the runtime)."""

    def __init__(self, consumers: list[EventConsumer], *, stall_after: float, interval: float) -> None:
        self.consumers = consumers
        self.stall_after = stall_after
        self.interval = interval
        self._state: dict[str, _GroupState] = {}

    def periodic(self) -> Periodic:
        """`sample_all` every `interval` seconds; a sample only reads, so stopping cuts it short."""
        return Periodic("consumer-watch", self.sample_all, self.interval, grace=0)

    async def sample_all(self) -> None:
        """Restart each consumer whose client stopped fetching, and sample each; one that cannot be read
        (broker away) is tried again at the next tick."""
        for consumer in self.consumers:
            if (why := consumer.broken()) is not None:
                await self.restart(consumer, why)
            with contextlib.suppress(Exception):
                await self.sample(consumer)

    async def restart(self, consumer: EventConsumer, why: str) -> None:
        """Restart `consumer`, saying why; a restart that fails is tried again at the next tick."""
        log.error("consumer stopped fetching; restarting it", group=consumer.group_id, why=why)
        RESTARTS.labels(consumer.group_id).inc()
        try:
            await consumer.restart()
        except Exception as exc:
            log.error(
                "consumer restart failed; tried again at the next check",
                group=consumer.group_id,
                error=describe(exc),
                next_step="check that Kafka answers (`make status`, or the broker's log)",
            )
        else:
            log.info("consumer restarted", group=consumer.group_id)

    async def sample(self, consumer: EventConsumer) -> None:
        """Read the group's committed and end offsets; update metrics and the stalled verdict."""
        kafka = consumer.kafka_consumer
        if kafka is None:
            return
        lags = await partition_lags(kafka)
        state = self._state.setdefault(consumer.group_id, _GroupState())
        now = time.monotonic()
        committed = {TopicPartition(p.topic, p.partition): p.committed or 0 for p in lags}
        waiting = {tp: lag.lag for tp, lag in zip(committed, lags, strict=True) if lag.lag > 0}
        for p in lags:
            LAG.labels(consumer.group_id, p.topic, str(p.partition)).set(p.lag)
        moved = any(committed[tp] > state.committed.get(tp, -1) for tp in committed)
        if moved or not waiting:
            state.last_progress = now
        state.committed, state.waiting = committed, waiting
        state.sampled_at = time.time()
        if not waiting:
            state.caught_up_at = state.sampled_at
        idle = now - state.last_progress
        SINCE_PROGRESS.labels(consumer.group_id).set(idle if waiting else 0)
        stalled = bool(waiting) and idle >= self.stall_after
        if stalled and not state.stalled:
            log.error(
                "consumer makes no progress: records are waiting and nothing was committed",
                group=consumer.group_id,
                seconds=round(idle),
                waiting={f"{tp.topic}[{tp.partition}]": n for tp, n in sorted(waiting.items())},
                next_step="read this service's log for the failing batch; `cdap lag` shows every group",
            )
        elif state.stalled and not stalled:
            log.info("consumer progressing again", group=consumer.group_id)
        state.stalled = stalled
        STALLED.labels(consumer.group_id).set(1 if stalled else 0)

    def freshness(self, group: str) -> Freshness:
        """`group`'s freshness. A last sample older than three intervals (the broker is away) or none yet
        says nothing of now: not caught up, whatever it said then."""
        state = self._state.get(group, _GroupState())
        recent = state.sampled_at is not None and time.time() - state.sampled_at <= 3 * self.interval
        as_of = datetime.fromtimestamp(state.caught_up_at, UTC) if state.caught_up_at is not None else None
        waiting = sum(state.waiting.values())
        return Freshness(as_of, recent and not waiting, waiting, state.stalled)

    async def check(self) -> None:
        """Readiness: raise `ConsumerStalled` naming every stalled consumer and its waiting partitions."""
        stalled = []
        for group, state in sorted(self._state.items()):
            if state.stalled:
                parts = ", ".join(
                    f"{tp.topic}[{tp.partition}] {n} waiting" for tp, n in sorted(state.waiting.items())
                )
                stalled.append(
                    f"consumer group {group} has made no progress for {self.stall_after:g} s ({parts})"
                )
        if stalled:
            raise ConsumerStalled("; ".join(stalled))


async def group_lags(
    bootstrap: str, prefix: str = "", login: KafkaLogin | None = None
) -> dict[str, list[PartitionLag]]:
    """Every consumer group of the cluster (whose name starts with `prefix`) and its lag per partition,
    as an operator's tool sees it from outside the services (logged in as `login`, which must be allowed
    to describe every group and topic; by default the one in the environment)."""
    from aiokafka.admin import AIOKafkaAdminClient

    options = (login or KafkaLogin.from_env()).options()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    ends_reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await admin.start()
    await ends_reader.start()
    try:
        groups = sorted(g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix))
        result: dict[str, list[PartitionLag]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            tps = sorted(offsets)
            ends = await ends_reader.end_offsets(tps) if tps else {}
            result[group] = [PartitionLag(tp.topic, tp.partition, offsets[tp].offset, ends[tp]) for tp in tps]
        return result
    finally:
        await ends_reader.stop()
        await admin.close()


async def partition_lags(kafka: AIOKafkaConsumer) -> list[PartitionLag]:
    """Committed offset and log end of each partition assigned to this consumer."""
    assigned = sorted(kafka.assignment())
    if not assigned:
        return []
    ends = await kafka.end_offsets(assigned)
    lags = []
    for tp in assigned:
        # Nothing committed yet: the group starts where its offset reset put it, not at 0.
        committed = await kafka.committed(tp)
        if committed is None:
            committed = await kafka.position(tp)
        lags.append(PartitionLag(tp.topic, tp.partition, committed, ends[tp]))
    return lags
