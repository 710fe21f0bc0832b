"""A hot route skips the middleware stack, yet answers as the stack would: its server span continues the
caller's trace, its duration is counted by route template, a trusted proxy's client address is believed,
errors are problem+json, and a request it declines takes the ordinary FastAPI route."""

from __future__ import annotations

from ipaddress import ip_network

from fastapi import Query, Request, Response
from httpx import ASGITransport, AsyncClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from cdap_shared.http import ServiceApp, create_app
from cdap_shared.problems import Problem
from cdap_shared.telemetry import configure_tracing

TEMPLATE = "/v1/things/{ident}"
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _app() -> ServiceApp:
    app = create_app(title="t", trusted_proxies=[ip_network("10.0.0.0/8")])

    @app.get(TEMPLATE)
    async def get_thing(ident: str, kind: str = Query(pattern="^[a-z]+$")) -> dict[str, str]:
        return {"ident": ident, "via": "stack"}

    def accepts(request: Request) -> str | None:
        ident: str = request.path_params["ident"]
        return ident if request.query_params.get("kind", "").isalpha() else None

    async def hot(request: Request, ident: str) -> Response:
        if ident == "refused":
            raise Problem(403, "Refused", reason="because")
        if ident == "crash":
            raise RuntimeError("secret internal detail")
        client = request.client.host if request.client else ""
        return Response(f'{{"ident": "{ident}", "via": "hot", "client": "{client}"}}', 200)

    app.add_hot_route("GET", TEMPLATE, accepts, hot)
    return app


def _count(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "cdap_http_request_duration_seconds_count", {"method": "GET", "route": TEMPLATE, "status": status}
    )
    return value or 0.0


async def test_a_hot_route_answers_as_the_stack_would() -> None:
    provider = configure_tracing("test")
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    counted = _count("200")
    transport = ASGITransport(app=_app(), raise_app_exceptions=False, client=("10.1.2.3", 4000))
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        served = await client.get(
            "/v1/things/a1",
            params={"kind": "box"},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "X-Forwarded-For": "192.0.2.7"},
        )
        declined = await client.get("/v1/things/a1", params={"kind": "b0x"})
        refused = await client.get("/v1/things/refused", params={"kind": "box"})
        crash = await client.get("/v1/things/crash", params={"kind": "box"})

    assert served.json() == {"ident": "a1", "via": "hot", "client": "192.0.2.7"}
    [span] = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)]
    assert span.name == f"GET {TEMPLATE}" and span.kind is trace.SpanKind.SERVER
    assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16)
    assert span.attributes is not None and span.attributes["http.status_code"] == 200
    assert _count("200") == counted + 1

    assert declined.status_code == 422  # FastAPI's own validation, on the ordinary route
    assert declined.headers["content-type"] == "application/problem+json"
    assert refused.status_code == 403 and refused.json()["reason"] == "because"
    assert refused.headers["content-type"] == "application/problem+json"
    assert crash.status_code == 500 and "secret" not in crash.text
    assert crash.headers["content-type"] == "application/problem+json"
