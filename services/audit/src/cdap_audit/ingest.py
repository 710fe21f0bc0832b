"""The consumer handler: each event becomes one log entry, and may raise alerts, in one transaction.

Exactly once comes from the shared consumer (inbox claim by event id in the same transaction,
offsets committed after it); this handler only has to be deterministic about what it writes.
"""

from __future__ import annotations

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit import alerts, ledger
from cdap_audit.domain import NotAudited, facts_from_event
from cdap_audit.rules import RuleSet
from cdap_shared.envelope import CloudEvent

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("cdap.audit")


def propagated_trace_id() -> str | None:
    """The trace id of the Kafka record's `traceparent` header, if it had one.

    The shared consumer runs the handler in a span whose parent it extracted from the record's
    headers; that remote parent is the producer's trace. A record without the header gets a fresh
    root span, whose random id means nothing to an auditor, so then there is no trace id.
    """
    parent = getattr(trace.get_current_span(), "parent", None)
    if isinstance(parent, SpanContext) and parent.is_valid and parent.is_remote:
        return format(parent.trace_id, "032x")
    return None


class Ingestor:
    """`async (session, event) -> None`, as `ServiceRuntime.consume` wants."""

    def __init__(self, rules: RuleSet, alerts_topic: str) -> None:
        self.rules = rules
        self.alerts_topic = alerts_topic

    async def __call__(self, session: AsyncSession, event: CloudEvent) -> None:
        try:
            facts = facts_from_event(event, propagated_trace_id())
        except NotAudited:
            # e.g. a `caf.dossier.upserted` published on a wrong topic: its content must not be kept.
            log.warning("event type not audited, skipped", type=event.type, event_id=event.id)
            return
        with tracer.start_as_current_span("audit.append") as span:
            index = await ledger.append(session, facts)
            span.set_attribute("cdap.audit.leaf_index", index)
        await alerts.check(session, self.rules, facts, index, self.alerts_topic)
