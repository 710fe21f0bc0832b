"""The consumer's batch handler: a batch of events becomes consecutive log entries, and may raise
alerts, in the consumer's one transaction per batch.

Exactly once comes from the shared consumer (inbox claim by event id in the same transaction,
offsets committed after it); this handler only has to be deterministic about what it writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import alerts, ledger
from cdap_audit.domain import EntryFacts, NotAudited, facts_from_event
from cdap_audit.rules import RuleSet
from cdap_shared import events as ev
from cdap_shared import standing
from cdap_shared.consumer import Fresh
from cdap_shared.envelope import CloudEvent

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("cdap.audit")


def record_context(record: ConsumerRecord[Any, Any]) -> Context:
    """The trace context of the record's headers (`traceparent`, `tracestate`)."""
    return propagate.extract(
        {key: value.decode(errors="replace") for key, value in record.headers or () if value}
    )


def header_trace_id(record: ConsumerRecord[Any, Any]) -> str | None:
    """The trace id of the record's `traceparent` header, if it has a valid one.

    A record without the header has no trace an auditor could follow, so then there is none.
    """
    if not record.headers:
        return None
    span = trace.get_current_span(record_context(record)).get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else None


def prepare_entry(
    record: ConsumerRecord[Any, Any], event: CloudEvent, data: ev.EventData
) -> ledger.Leaf | NotAudited:
    """An event's entry as far as it goes outside the batch's transaction: its facts and leaf (the
    consumer's `prepare`, run while the previous batch is applied), or why the log must not keep it."""
    try:
        # The header's trace id is only read when the payload has none (parsing it costs).
        own = getattr(data, "trace_id", None)
        return ledger.leaf_of(facts_from_event(event, own or header_trace_id(record), data))
    except NotAudited as exc:
        return exc


def trace_entries(
    batch: Fresh,
    first: int,
    audited: list[EntryFacts],
    window: tuple[int, int, int, int],
) -> None:
    """Continue each entry's trace in audit: a consumer span (child of the record's `traceparent`)
    over the batch's handling, and its `audit.append` child over the batch's append, which gave the
    entry its leaf index. The batch is handled once; each trace shows the part its event was in.
    `window` is (handling started, append started, append ended, handling ended), in ns."""
    indices = {facts.event_id: first + i for i, facts in enumerate(audited)}
    started, appending, appended, ended = window
    for item in batch:
        record, event = item.record, item.event
        parent = record_context(record)
        if event.id not in indices or not trace.get_current_span(parent).get_span_context().is_valid:
            continue
        consume = tracer.start_span(
            f"{event.type} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            start_time=started,
            attributes={"messaging.message.id": event.id, "messaging.destination.name": record.topic},
        )
        append = tracer.start_span(
            "audit.append",
            context=trace.set_span_in_context(consume),
            start_time=appending,
            attributes={"cdap.audit.leaf_index": indices[event.id], "cdap.audit.batch_size": len(audited)},
        )
        append.end(end_time=appended)
        consume.end(end_time=ended)


class Ingestor:
    """`async (session, [Incoming, ...]) -> None`: `ServiceRuntime.consume`'s `batch_handler`, with
    `prepare_entry` as its `prepare` (a record without its `prepared` entry is prepared here).

    With `traced`, each entry's trace continues in audit (`trace_entries`): two spans per event, worth
    it only when spans are exported somewhere (`CDAP_OTLP_ENDPOINT`). `on_commit` is called once a
    batch's entries are committed (the checkpoint signer waits for it)."""

    def __init__(
        self,
        rules: RuleSet,
        alerts_topic: str,
        *,
        traced: bool = False,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.rules = rules
        self.alerts_topic = alerts_topic
        self.frontier = ledger.Frontier(on_commit)
        self.recorded = alerts.Recorded()
        self.traced = traced

    async def __call__(self, session: AsyncSession, batch: Fresh) -> None:
        started = time.time_ns()
        leaves: list[ledger.Leaf] = []
        for item in batch:
            entry = item.prepared
            if entry is None:
                entry = prepare_entry(item.record, item.event, item.data)
            if isinstance(entry, NotAudited):
                # e.g. a `caf.dossier.upserted` published on a wrong topic: its content must not be kept.
                log.warning("event type not audited, skipped", type=item.event.type, event_id=item.event.id)
            else:
                leaves.append(entry)
        if not leaves:
            return
        audited = [leaf.facts for leaf in leaves]
        appending_ns = time.time_ns()
        appending = await ledger.prepare(session, leaves, self.frontier)
        counts = await alerts.load_counts(session, self.rules, audited)
        # The rules are evaluated (Python) while PostgreSQL takes the COPY: nothing else is sent on
        # the session until the write is done, and both belong to the batch's one transaction.
        writing = asyncio.create_task(ledger.write(session, appending, self.frontier))
        first = appending.first
        entries = [(facts, first + i) for i, facts in enumerate(audited)]
        try:
            fired = await alerts.evaluate_batch(self.rules, entries, counts, self.recorded)
        finally:
            await writing
        appended = time.time_ns()
        await alerts.record(session, counts, fired, self.alerts_topic)
        self.recorded.keep_on_commit(session, fired)
        for item in batch:
            await standing.apply(session, item.event)  # who may still read the log
        if self.traced:
            trace_entries(batch, first, audited, (started, appending_ns, appended, time.time_ns()))
