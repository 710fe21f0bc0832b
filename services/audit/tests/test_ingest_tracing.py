"""Each audited event's trace continues in audit: a consumer span under the record's `traceparent`,
and under it the `audit.append` span that gave the entry its leaf index."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cdap_audit.domain import facts_from_event
from cdap_audit.ingest import trace_entries
from cdap_shared.consumer import Incoming
from cdap_shared.events import parse_data
from cdap_shared.telemetry import configure_tracing
from cdap_testing.fuzz.running import consumer_record

from .conftest import consulted

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def test_each_traced_entry_gets_a_consumer_span_and_an_append_span_in_its_own_trace() -> None:
    provider = configure_tracing("test")
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced, untraced = consulted("actor-1", "1234567"), consulted("actor-2", "7654321")
    batch = [
        Incoming(
            consumer_record(
                "dossier.consultations",
                traced.to_bytes(),
                0,
                headers=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode())],
            ),
            traced,
            parse_data(traced),
        ),
        Incoming(
            consumer_record("dossier.consultations", untraced.to_bytes(), 1), untraced, parse_data(untraced)
        ),
    ]
    audited = [facts_from_event(item.event) for item in batch]

    trace_entries(batch, 41, audited, (1_000, 2_000, 3_000, 4_000))

    spans = {s.name: s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)}
    consume, append = spans["dossier.consulted process"], spans["audit.append"]
    assert consume.kind is trace.SpanKind.CONSUMER
    assert consume.parent is not None and consume.parent.span_id == int(PARENT_ID, 16)
    assert append.parent is not None and append.parent.span_id == consume.context.span_id
    assert append.attributes is not None and append.attributes["cdap.audit.leaf_index"] == 41
    assert (append.start_time, append.end_time, consume.start_time, consume.end_time) == (
        2_000,
        3_000,
        1_000,
        4_000,
    )
    # The event without a trace context starts no trace of its own.
    assert [s for s in exporter.get_finished_spans() if s.context.trace_id != int(TRACE_ID, 16)] == []
