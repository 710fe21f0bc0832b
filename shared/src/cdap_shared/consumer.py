"""Kafka consumers that apply each event exactly once to the service's database.

A batch is applied in one transaction together with its inbox claims; offsets are committed only
after that transaction (FastStream `AckPolicy.NACK_ON_ERROR`: an exception rewinds the batch).
An event that keeps failing is retried alone a bounded number of times, then sent to `<topic>.dlq`
with the error in headers, and consumption goes on. An outage (database or broker unreachable) is
not the event's fault: the batch is rewound and retried, never dead-lettered.

A record the Kafka client cannot even read (a corrupt batch, a compression it cannot undo) is
dead-lettered too, as a trace naming its topic, partition and offset, and the consumer moves past it
(`_fetch`): FastStream's own loop would log it to nobody and fetch the same bytes forever.

With `prefetch`, the next batch is fetched and validated while the current one is applied (the
event loop is otherwise idle while PostgreSQL works). The consumer's position is then past the next
batch, so a batch's commit names its own offsets, and a rewound batch takes the prefetched one back
with it (`_BatchOffsets`): no offset is ever committed past a record that was not applied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.message import KafkaAckableMessage
from faststream.message import StreamMessage
from opentelemetry import propagate, trace
from prometheus_client import Counter
from pydantic import SkipValidation, ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cdap_shared import asyncapi, inbox
from cdap_shared.envelope import CloudEvent
from cdap_shared.events import EVENT_DATA, EventData, dlq_for, parse_data

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("cdap.consumer")

Handler = Callable[[AsyncSession, CloudEvent], Awaitable[None]]
SettingsT = TypeVar("SettingsT")
EventHandler = Callable[[AsyncSession, SettingsT, Any, datetime], Awaitable[None]]
"""A row of a service's `HANDLERS` table: a plain function of the session, the service's settings, the
event's typed data (the model its type names in `events.EVENT_DATA`) and the event's time."""


def dispatch(
    table: Mapping[str, EventHandler[SettingsT]], settings: SettingsT, *, then: Handler | None = None
) -> Handler:
    """The consumer's handler for a service's `HANDLERS` table (event type -> `EventHandler`): an event
    with a row gets its typed data and is applied by it; the others on the topics are none of the
    table's business. `then` sees every event after it (the callers' standing)."""

    async def apply(session: AsyncSession, event: CloudEvent) -> None:
        if (handle := table.get(event.type)) is not None:
            await handle(session, settings, parse_data(event), event.time.astimezone(UTC))
        if then is not None:
            await then(session, event)

    return apply


class Incoming(NamedTuple):
    """A record with its event and the event's payload, each validated once when the batch arrives,
    and what the consumer's `prepare` made of them (None without one)."""

    record: ConsumerRecord[Any, Any]
    event: CloudEvent
    data: EventData
    prepared: Any = None


Fresh = list[Incoming]
Decoded = Incoming | ValueError
"""A record's event and payload, or why it cannot be applied (a `ValidationError` is a `ValueError`)."""
Prepare = Callable[[ConsumerRecord[Any, Any], CloudEvent, EventData], Any]
"""A batch handler's own work on one validated record that needs no database (`Incoming.prepared`)."""
Offsets = dict[TopicPartition, int]
Fetch = Callable[[AIOKafkaConsumer], Awaitable[tuple[ConsumerRecord[Any, Any], ...]]]
# Records validated between two yields to the event loop while a batch is prefetched.
_SLICE = 200
BatchHandler = Callable[[AsyncSession, Fresh], Awaitable[None]]
"""Takes a batch's new events (inbox-claimed, in order) at once, for handlers whose per-event cost shows."""

APPLIED = Counter("cdap_events_applied_total", "Events applied", ["topic"])
DUPLICATES = Counter("cdap_events_duplicate_total", "Redelivered events skipped by the inbox", ["topic"])
DEAD_LETTERED = Counter("cdap_events_dead_lettered_total", "Events sent to a DLQ", ["topic"])
UNREADABLE = Counter(
    "cdap_records_unreadable_total",
    "Records the Kafka client could not read, dead-lettered as a trace",
    ["topic"],
)


def is_outage(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's (connection lost/refused), not the event's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError,
        ):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sa_exc.InterfaceError | asyncpg.exceptions.CannotConnectNowError):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


# Fetch errors that say the bytes at the position cannot be read, as opposed to a broker that cannot be
# reached (FastStream's loop retries those, and the watch reports a consumer that stops progressing).
_UNREADABLE_KAFKA_ERRORS = (kafka_errors.UnsupportedCodecError, kafka_errors.CorruptRecordException)


def is_unreadable(exc: BaseException) -> bool:
    """True when a fetch failed on the records themselves (codec, corruption, a decoder's own error)."""
    if isinstance(exc, _UNREADABLE_KAFKA_ERRORS):
        return True
    # A decompressor's own exception (cramjam, gzip, struct) is not a KafkaError; connection errors are.
    return not isinstance(
        exc, kafka_errors.KafkaError | kafka_errors.ConsumerStoppedError | OSError | asyncio.CancelledError
    )


def describe(exc: BaseException) -> str:
    """A short error text without the offending values (they may hold a NIR or a phone number)."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
        )[:500]
    if isinstance(exc, sa_exc.StatementError):
        # SQLAlchemy's text lists the statement's parameters (a NIR, a name), and the driver's message
        # quotes the offending value after a colon ("invalid input for query argument $1: <value>"):
        # keep the driver's exception, its SQLSTATE and the message up to that colon.
        cause: BaseException = exc.orig if exc.orig is not None else exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        sqlstate = getattr(cause, "sqlstate", None)
        message = str(cause).split("\n", 1)[0].split(":", 1)[0]
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        return f"{type(exc).__name__}: {type(cause).__name__}{code}: {message}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


class EventConsumer:
    """Subscribes a handler to topics in a consumer group, with inbox, retries and DLQ."""

    def __init__(
        self,
        broker: KafkaBroker,
        sessions: async_sessionmaker[AsyncSession],
        *,
        group_id: str,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_attempts: int = 3,
        retry_delay: float = 0.2,
        outage_delay: float = 1.0,
        inbox: bool = True,
        prefetch: bool = False,
        prepare: Prepare | None = None,
    ) -> None:
        self.broker = broker
        self.sessions = sessions
        self.group_id = group_id
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.handler = handler
        self.batch_handler = batch_handler
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.outage_delay = outage_delay
        # Without the inbox, a redelivered event is applied again: only for a handler that sets rows to
        # what the event says (a projection), where a replay in the key's order ends in the same state.
        # The inbox is one table per database: a second group in it must do without.
        self.inbox = inbox
        # Only with the inbox: a prefetch may read records again (after a rewind), the inbox skips them.
        if prefetch and not inbox:
            raise ValueError("prefetch needs the inbox")
        self.prefetch = prefetch
        # With `prefetch`, done while the previous batch is applied, when the event loop would wait.
        self.prepare = prepare
        self._ahead: tuple[AIOKafkaConsumer, asyncio.Future[tuple[ConsumerRecord[Any, Any], ...]]] | None = (
            None
        )
        self._decoded: dict[tuple[str, int, int], Decoded] = {}
        self._rewind: Offsets = {}
        self._consumed: Offsets = {}
        self.topics: tuple[str, ...] = ()
        self.max_records = 500
        self.subscriber: Any = None
        self._restarting = False

    @property
    def kafka_consumer(self) -> AIOKafkaConsumer | None:
        """The running aiokafka consumer (None before the broker started the subscriber)."""
        return getattr(self.subscriber, "consumer", None)

    def broken(self) -> str | None:
        """Why this consumer will fetch nothing more until it is restarted, or None. aiokafka's fetch
        routine ends on an error it does not expect, and `getmany` then returns nothing, forever, without
        raising: FastStream's consume loop, which restarts itself, cannot see it."""
        if self._restarting:
            return "its last restart did not finish"
        # `_fetcher` is aiokafka's; its `error_future` is the routine's task, done only once it has ended.
        fetcher = getattr(self.kafka_consumer, "_fetcher", None)
        routine = getattr(fetcher, "error_future", None)
        if routine is not None and routine.done() and getattr(self.subscriber, "running", False):
            return "aiokafka's fetch routine has ended"
        return None

    async def restart(self) -> None:
        """Stop the subscriber and start it again: a new client joins the group and reads on from the
        committed offsets (a batch applied but not committed is met again, and the inbox skips it)."""
        self._restarting = True
        client = self.kafka_consumer
        if client is not None:
            try:
                await client.stop()  # leaves the group, so the new client is assigned at once
            except kafka_errors.KafkaError:
                # The dead routine's error, raised again when the stop awaits it, before the stop closes
                # the client's connections: closed here.
                await client._client.close()
        await self.subscriber.stop()  # the client is stopped already: FastStream drops it
        self._ahead, self._rewind, self._consumed = None, {}, {}
        self._decoded.clear()
        await self.subscriber.start()
        self._restarting = False

    def subscribe(
        self,
        *topics: str,
        max_records: int = 500,
        offset_reset: Literal["earliest", "latest"] = "earliest",
        accepts: Iterable[str] = (),
    ) -> None:
        """Register the batch subscriber on the broker (before `broker.start()`); `accepts` names the
        event types it reads (every registered type by default), for the AsyncAPI document."""
        subscriber = self.broker.subscriber(
            *topics,
            group_id=self.group_id,
            title=self.group_id,
            description=asyncapi.KEYED,
            batch=True,
            max_records=max_records,
            # The records' bytes as they are: events are validated once, in `handle_records` (FastStream's
            # default decoder would parse every record's JSON a first time, for nothing).
            decoder=_raw_bodies,
            batch_timeout_ms=50,
            auto_offset_reset=offset_reset,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=_tolerant_parse,
        )

        async def on_batch(body: Any, message: KafkaMessage) -> None:
            await self.on_batch(body, message)

        # Typed with what the records carry, for the AsyncAPI document. Skipped at run time: each record
        # is validated in `handle_records`, alone, so a bad one is dead-lettered without failing the batch.
        carried = asyncapi.envelopes(accepts or EVENT_DATA)
        on_batch.__annotations__["body"] = list[SkipValidation[carried]]  # type: ignore[valid-type]
        subscriber(on_batch)
        self.subscriber, self.topics, self.max_records = subscriber, topics, max_records
        # FastStream's consume loop catches a fetch error, logs it through the broker's logger (none
        # here) and fetches the same records again, forever: unreadable records are handled here.
        subscriber.get_msg = functools.partial(self._fetch, subscriber.get_msg)  # type: ignore[method-assign]

    async def on_batch(self, body: list[Any], message: KafkaMessage) -> None:
        """FastStream entrypoint: `message.raw_message` holds the batch's ConsumerRecords."""
        raw = message.raw_message
        records: tuple[ConsumerRecord[Any, Any], ...] = raw if isinstance(raw, tuple) else (raw,)
        if self.prefetch and isinstance(message, KafkaAckableMessage):
            message.consumer = _BatchOffsets(self, message.consumer, self._consumed)
        await self.handle_records(records)

    async def handle_records(self, records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
        parsed: Fresh = []
        poison: list[tuple[ConsumerRecord[Any, Any], BaseException]] = []
        for record in records:
            decoded = self._decoded.pop(_key(record), None) or _decode(record, self.prepare)
            if isinstance(decoded, ValueError):
                poison.append((record, decoded))
            else:
                parsed.append(decoded)
        try:
            await self._apply(parsed)
        except Exception as exc:
            if is_outage(exc):
                log.warning(
                    "consumer outage, batch will be retried", group=self.group_id, error=describe(exc)
                )
                await asyncio.sleep(self.outage_delay)
                raise
            # Something in the batch is bad: find it by applying the events one at a time.
            for item in parsed:
                await self._apply_alone(item)
        for record, error in poison:
            await self._dead_letter(record, error)

    async def _apply(self, items: Fresh) -> None:
        if not items:
            return
        async with self.sessions() as session, session.begin():
            claims = [(item.event.id, item.record.topic) for item in items]
            fresh = await inbox.claim(session, claims) if self.inbox else {i for i, _ in claims}
            batch: Fresh = []
            for item in items:
                record, event = item.record, item.event
                if event.id not in fresh:
                    DUPLICATES.labels(record.topic).inc()
                    continue
                fresh.discard(event.id)  # the same id twice in one batch is applied once
                if self.batch_handler is not None:
                    batch.append(item)
                    continue
                assert self.handler is not None
                with tracer.start_as_current_span(
                    f"{event.type} process",
                    context=propagate.extract(_headers(record)),
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"messaging.message.id": event.id, "messaging.destination.name": record.topic},
                ):
                    await self.handler(session, event)
            if batch and self.batch_handler is not None:
                with tracer.start_as_current_span(
                    "batch process",
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"messaging.batch.message_count": len(batch)},
                ):
                    await self.batch_handler(session, batch)
        for topic, count in collections.Counter(item.record.topic for item in items).items():
            APPLIED.labels(topic).inc(count)

    async def _apply_alone(self, item: Incoming) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self._apply([item])
                return
            except Exception as exc:
                if is_outage(exc):
                    await asyncio.sleep(self.outage_delay)
                    raise
                if attempt == self.max_attempts:
                    await self._dead_letter(item.record, exc)
                    return
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))

    async def _fetch(
        self, default: Fetch, consumer: AIOKafkaConsumer
    ) -> tuple[ConsumerRecord[Any, Any], ...]:
        """FastStream's batch fetch (`_fetch_readable`); with `prefetch`, the batch fetched and validated
        while the previous one was applied, and the next one started."""
        if not self.prefetch:
            return await self._fetch_readable(default, consumer)
        ahead, self._ahead = self._ahead, None
        if self._rewind:
            await self._take_back(consumer, ahead)
            ahead = None
        if ahead is None or ahead[0] is not consumer:
            self._decoded.clear()  # a prefetch for another client (before a reconnect) is dropped
            ahead = (consumer, asyncio.ensure_future(self._fetch_decoded(default, consumer)))
        records = await ahead[1]
        # What this batch's commit names (`_BatchOffsets`): every assigned partition's position now,
        # as the client's own commit would, before the next batch moves it on.
        self._consumed = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        future = asyncio.ensure_future(self._fetch_decoded(default, consumer))
        future.add_done_callback(_retrieved)  # its error, if any, is raised when it is awaited
        self._ahead = (consumer, future)
        return records

    async def _fetch_decoded(
        self, default: Fetch, consumer: AIOKafkaConsumer
    ) -> tuple[ConsumerRecord[Any, Any], ...]:
        """A batch, its records validated (`handle_records` takes them from `_decoded`), yielding
        to the event loop every few hundred records so the batch being applied is not held up."""
        records = await self._fetch_readable(default, consumer)
        for n, record in enumerate(records, 1):
            self._decoded[_key(record)] = _decode(record, self.prepare)
            if n % _SLICE == 0:
                await asyncio.sleep(0)
        return records

    async def _take_back(
        self,
        consumer: AIOKafkaConsumer,
        ahead: tuple[AIOKafkaConsumer, asyncio.Future[tuple[ConsumerRecord[Any, Any], ...]]] | None,
    ) -> None:
        """After a rewound batch: wait for the prefetch, then put every partition back at the earliest
        record of either batch, so the prefetched records are fetched again after the rewound ones."""
        rewind, self._rewind = self._rewind, {}
        if ahead is not None:
            with contextlib.suppress(Exception):
                for record in await ahead[1]:
                    tp = TopicPartition(record.topic, record.partition)
                    rewind[tp] = min(rewind.get(tp, record.offset), record.offset)
        self._decoded.clear()
        assigned = consumer.assignment()
        for tp, offset in rewind.items():
            if tp in assigned:
                consumer.seek(tp, offset)

    async def _fetch_readable(
        self, default: Fetch, consumer: AIOKafkaConsumer
    ) -> tuple[ConsumerRecord[Any, Any], ...]:
        """FastStream's batch fetch, moving past what the client cannot read instead of stopping."""
        try:
            return await default(consumer)
        except Exception as exc:
            if not is_unreadable(exc):
                raise
            log.error(
                "a Kafka record could not be read; isolating it", group=self.group_id, error=describe(exc)
            )
            return await self._fetch_around_unreadable(consumer)

    async def _fetch_around_unreadable(
        self, consumer: AIOKafkaConsumer
    ) -> tuple[ConsumerRecord[Any, Any], ...]:
        """Read each partition record by record from its committed offset; dead-letter what fails.

        aiokafka advances a partition's position only when a fetch is returned whole, so after a failure
        the records read before the bad one were neither delivered nor skipped: going back to the
        committed offsets and reading one record at a time finds exactly which offset cannot be read.
        """
        assignment = sorted(consumer.assignment())
        for tp in assignment:
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
        records: list[ConsumerRecord[Any, Any]] = []
        for tp in assignment:
            while len(records) < self.max_records:
                try:
                    got = await consumer.getmany(tp, timeout_ms=200, max_records=1)
                except Exception as exc:
                    if not is_unreadable(exc):
                        raise
                    offset = await consumer.position(tp)
                    await self._dead_letter_unreadable(tp, offset, exc)
                    consumer.seek(tp, offset + 1)
                    break
                if not got:
                    break
                records.extend(got.get(tp, ()))
        return tuple(records)

    async def _dead_letter_unreadable(self, tp: TopicPartition, offset: int, error: BaseException) -> None:
        """Publish a trace of a record that could not be read (its bytes cannot be had) to the DLQ."""
        headers = {
            "x-error": f"record could not be read by the Kafka client: {describe(error)}",
            "x-error-type": type(error).__name__,
            "x-original-topic": tp.topic,
            "x-original-partition": str(tp.partition),
            "x-original-offset": str(offset),
            "x-consumer-group": self.group_id,
        }
        await self.broker.publish(b"", topic=dlq_for(tp.topic), headers=headers)
        UNREADABLE.labels(tp.topic).inc()
        DEAD_LETTERED.labels(tp.topic).inc()
        log.error(
            "unreadable record dead-lettered, consumer moves past it",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            group=self.group_id,
            error_type=type(error).__name__,
        )

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: BaseException) -> None:
        """Publish the untouched record to `<topic>.dlq` with why it failed (waits for the ack)."""
        headers = _headers(record)
        headers.update(
            {
                "x-error": describe(error),
                "x-error-type": type(error).__name__,
                "x-original-topic": record.topic,
                "x-original-partition": str(record.partition),
                "x-original-offset": str(record.offset),
                "x-consumer-group": self.group_id,
            }
        )
        await self.broker.publish(
            record.value or b"", topic=dlq_for(record.topic), key=record.key, headers=headers
        )
        DEAD_LETTERED.labels(record.topic).inc()
        log.error(
            "event dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_type=type(error).__name__,
        )


async def _raw_bodies(message: StreamMessage[Any], _default: Callable[..., Any]) -> Any:
    """The batch's record values, undecoded (see `subscribe`)."""
    return message.body


async def _tolerant_parse(
    records: tuple[ConsumerRecord[Any, Any], ...],
    default: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's batch parser, fed copies of the records whose header values are not valid UTF-8
    (the others, nearly all, go as they are).

    FastStream decodes every header value strictly; a header without a value (Kafka allows it) or with
    other bytes made it raise before `on_batch` ran, and it then dropped the whole batch, valid events
    included, without a nack or a dead letter (found by fuzzing). Its decoder parses the records again
    later, so the message keeps the copies: a dead letter carries the headers as text, as it always did.
    """
    return await default(
        tuple(
            r
            if _decodable(r)
            else replace(r, headers=[(k, _header_text(v).encode()) for k, v in r.headers or ()])
            for r in records
        )
    )


def _decodable(record: ConsumerRecord[Any, Any]) -> bool:
    try:
        return all(v is not None and v.decode() is not None for _, v in record.headers or ())
    except UnicodeDecodeError:
        return False


def _header_text(value: bytes | None) -> str:
    return "" if value is None else value.decode(errors="replace")


def _headers(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    """The record's headers as text. Kafka allows a header without a value (aiokafka gives `None`):
    it becomes "" rather than an exception, which would rewind the batch onto the same record forever."""
    return {k: _header_text(v) for k, v in record.headers or ()}


class _BatchOffsets:
    """What FastStream acks or rewinds a batch through when the next one is prefetched (it stands for
    the aiokafka consumer in the message): the commit names the positions the consumer had when the
    batch was fetched (`offsets`), since it is already past the prefetched records, and a rewind is
    left to the next fetch (`EventConsumer._take_back`), which first waits for the prefetched batch."""

    def __init__(self, owner: EventConsumer, consumer: Any, offsets: Offsets) -> None:
        self.owner, self.consumer, self.offsets = owner, consumer, offsets

    async def commit(self) -> None:
        assigned = self.consumer.assignment()
        # A partition taken away by a rebalance is not committed here: its new owner starts from
        # the last commit, and the inbox skips what was applied since.
        offsets = {tp: offset for tp, offset in self.offsets.items() if tp in assigned}
        if offsets:
            await self.consumer.commit(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        rewind = self.owner._rewind
        rewind[partition] = min(rewind.get(partition, offset), offset)


def _key(record: ConsumerRecord[Any, Any]) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


def _decode(record: ConsumerRecord[Any, Any], prepare: Prepare | None = None) -> Decoded:
    """The record's event and payload, each validated once, and `prepare`d, or why it cannot be applied
    (a `ValueError` of `prepare` too)."""
    try:
        event = CloudEvent.from_bytes(record.value)
        data = parse_data(event)
        return Incoming(record, event, data, None if prepare is None else prepare(record, event, data))
    except ValueError as exc:  # pydantic's ValidationError, an unknown type
        return exc


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a prefetch's error as seen: it is raised where the batch is awaited, or dropped with it."""
    if not future.cancelled():
        future.exception()
