"""The consumer's batch handler: a batch of events becomes consecutive log entries, and may raise
alerts, in the consumer's one transaction per batch.

Exactly once comes from the shared consumer (inbox claim by event id in the same transaction,
offsets committed after it); this handler only has to be deterministic about what it writes.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import ConsumerRecord
from opentelemetry import propagate, trace
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import alerts, ledger
from cdap_audit.domain import EntryFacts, NotAudited, facts_from_event
from cdap_audit.rules import RuleSet
from cdap_shared import standing
from cdap_shared.envelope import CloudEvent

log = structlog.get_logger(__name__)


def header_trace_id(record: ConsumerRecord[Any, Any]) -> str | None:
    """The trace id of the record's `traceparent` header, if it has a valid one.

    A record without the header has no trace an auditor could follow, so then there is none.
    """
    for key, value in record.headers or ():
        if key == "traceparent" and value:
            context = trace.get_current_span(propagate.extract({key: value.decode(errors="replace")}))
            span = context.get_span_context()
            return format(span.trace_id, "032x") if span.is_valid else None
    return None


class Ingestor:
    """`async (session, [(record, event), ...]) -> None`: `ServiceRuntime.consume`'s `batch_handler`."""

    def __init__(self, rules: RuleSet, alerts_topic: str) -> None:
        self.rules = rules
        self.alerts_topic = alerts_topic
        self.frontier = ledger.Frontier()

    async def __call__(
        self, session: AsyncSession, batch: list[tuple[ConsumerRecord[Any, Any], CloudEvent]]
    ) -> None:
        audited: list[EntryFacts] = []
        for record, event in batch:
            try:
                audited.append(facts_from_event(event, header_trace_id(record)))
            except NotAudited:
                # e.g. a `caf.dossier.upserted` published on a wrong topic: its content must not be kept.
                log.warning("event type not audited, skipped", type=event.type, event_id=event.id)
        if not audited:
            return
        first = await ledger.append(session, audited, self.frontier)
        entries = [(facts, first + i) for i, facts in enumerate(audited)]
        await alerts.check(session, self.rules, entries, self.alerts_topic)
        for _, event in batch:
            await standing.apply(session, event)  # who may still read the log
