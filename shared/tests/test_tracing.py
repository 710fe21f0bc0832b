"""The trace of the request that wrote an outbox row continues in the relay that published it and in the
consumer that applied it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cdap_shared import events as ev
from cdap_shared.telemetry import configure_tracing
from cdap_testing import eventually

from .pipeline import build_pipeline, close_pipeline
from .samples import SAMPLES

pytestmark = pytest.mark.stack


async def test_publish_span_is_a_child_of_the_request_and_the_consumer_span_of_the_publish(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> None:
    provider = configure_tracing("test")
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    p = await build_pipeline(stack, make_database, make_topic, tracer_provider=provider)
    try:
        event = ev.make_event(
            "dossier.consulted", source="/t", subject="1234567", data=SAMPLES["dossier.consulted"]
        )
        with trace.get_tracer("test").start_as_current_span("GET /v1/dossiers/1234567") as request_span:
            await p.write(event)
        request = request_span.get_span_context()
        p.start_relay()

        def processed() -> list[object]:
            return [s for s in exporter.get_finished_spans() if s.name == "dossier.consulted process"]

        async def check() -> list[object]:
            return processed()

        consumer_span = (await eventually(check))[0]
        (publish_span,) = [s for s in exporter.get_finished_spans() if s.name.endswith(" publish")]
        assert publish_span.kind is trace.SpanKind.PRODUCER
        assert publish_span.parent is not None and publish_span.parent.span_id == request.span_id
        assert consumer_span.context.trace_id == request.trace_id  # type: ignore[attr-defined]
        assert consumer_span.parent is not None  # type: ignore[attr-defined]
        assert consumer_span.parent.span_id == publish_span.context.span_id  # type: ignore[attr-defined]
    finally:
        await close_pipeline(p)


async def test_sql_statements_are_spans_of_the_request(database_url: str) -> None:
    import asyncpg

    from cdap_shared.db import asyncpg_dsn

    provider = configure_tracing("test", trace_sql=True)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[union-attr]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        with trace.get_tracer("test").start_as_current_span("GET /v1/something") as request_span:
            await conn.fetchval("SELECT 41 + 1")
    finally:
        await conn.close()
    sql = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("db.system") == "postgresql"
    ]
    assert sql and sql[0].parent is not None
    assert sql[0].parent.span_id == request_span.get_span_context().span_id
