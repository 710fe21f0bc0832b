"""Guarantee 5 as a person checks it: one lookup's trace, opened in the trace viewer the local stack
runs (Jaeger, `make up`), goes from the HTTP request through Kafka to the audit entry.

The services export their spans over OTLP to the viewer; the test reads the audit entry's trace id
through the audit API, as an auditor would, then fetches that trace from the viewer's API."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import pytest

from cdap_cli.caf_feed import build_pools, make_dossier
from cdap_cli.devrun import LOCAL_OTLP_ENDPOINT
from cdap_shared import events as ev
from cdap_shared.topics import named
from cdap_testing.events import publish
from cdap_testing.system import System, activate_and_login, caf_staff, wait_ready

from .test_revocation import provisioned_partner

pytestmark = pytest.mark.stack
VIEWER = "http://127.0.0.1:16686"


async def viewer_trace(client: httpx.AsyncClient, trace_id: str, wanted: int) -> dict[str, Any]:
    """The trace as the viewer's API serves it, once it holds `wanted` spans (the services export
    them in batches, every few seconds)."""
    last: Any = None
    for _ in range(120):
        r = await client.get(f"{VIEWER}/api/traces/{trace_id}")
        if r.status_code == 200 and r.json().get("data"):
            last = r.json()["data"][0]
            if len(last["spans"]) >= wanted:
                return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"the viewer never held {wanted} spans of {trace_id}: {last}")


async def test_a_lookup_is_one_trace_from_the_request_to_the_audit_append(system: System) -> None:
    system.common_env["CDAP_OTLP_ENDPOINT"] = LOCAL_OTLP_ENDPOINT
    await system.start("identity", "dossiers", "audit")
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_ready(client, *(system.url(name) for name in ("identity", "dossiers", "audit")))
        assert (await client.get(f"{VIEWER}/api/services")).status_code == 200, "run `make up`"
        admin, email, _ = await provisioned_partner(system, client)
        user = await activate_and_login(client, system.url("identity"), email)
        auditor = await caf_staff(system, client, admin, "auditor")
        numero = f"{7_000_000 + int(time.time() * 1000) % 999_999:07d}"
        dossier = make_dossier(random.Random(5), build_pools(1, 50), numero, "76")
        await publish(
            system.kafka,
            named("caf.dossiers"),
            ev.make_event("caf.dossier.upserted", source="/caf", subject=numero, data=dossier),
        )
        lookup = f"{system.url('dossiers')}/v1/dossiers/{numero}"
        for _ in range(100):  # the grant and the dossier reach the dossiers service's projections
            r = await client.get(lookup, params={"motif": "accompagnement_social"}, headers=user["headers"])
            if r.status_code in (200, 403) and r.headers.get("X-Audit-Id"):
                break
            await asyncio.sleep(0.1)
        audit_id = r.headers["X-Audit-Id"]

        entries: list[dict[str, Any]] = []
        for _ in range(100):  # the consultation reaches the audit log
            found = await client.get(
                f"{system.url('audit')}/v1/entries", params={"event_id": audit_id}, headers=auditor["headers"]
            )
            assert found.status_code == 200, found.text
            entries = found.json()["items"]
            if entries:
                break
            await asyncio.sleep(0.1)
        assert entries, "the consultation never reached the audit log"
        trace_id = entries[0]["trace_id"]
        assert trace_id

        trace = await viewer_trace(client, trace_id, wanted=4)

    services = {key: p["serviceName"] for key, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}

    def one(service: str, name: str) -> dict[str, Any]:
        matching = [
            s for s in spans.values() if services[s["processID"]] == service and s["operationName"] == name
        ]
        assert len(matching) == 1, (
            service,
            name,
            sorted((services[s["processID"]], s["operationName"]) for s in spans.values()),
        )
        return matching[0]

    def parent(span: dict[str, Any]) -> dict[str, Any] | None:
        refs = [ref for ref in span["references"] if ref["refType"] == "CHILD_OF"]
        return spans.get(refs[0]["spanID"]) if refs else None

    http = one("dossiers", "GET /v1/dossiers/{numero}")
    produce = one("dossiers", f"{named('dossier.consultations')} publish")
    consume = one("audit", "dossier.consulted process")
    append = one("audit", "audit.append")
    assert parent(append) is consume and parent(consume) is produce
    assert parent(produce) is http  # the event's row was written inside the request
    assert all(s["traceID"] == trace_id for s in (http, produce, consume, append))
