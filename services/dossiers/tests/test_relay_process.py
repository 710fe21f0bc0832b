"""The relay in its own process: consultations reach Kafka from it (and its count the service's /metrics),
and a relay that dies is reported and started again."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from cdap_shared.relay_process import RelayProcess
from cdap_shared.topics import named
from cdap_testing import eventually, relay_parked

from .conftest import Service
from .test_outages import end_offsets, ids_since, seed

pytestmark = pytest.mark.stack


async def test_the_relay_process_delivers_and_a_dead_one_is_reported_then_replaced(
    stack: dict[str, str], service_factory: Callable[..., Awaitable[Service]]
) -> None:
    svc = await service_factory()
    relay = svc.app.state.ctx.runtime.relay
    assert isinstance(relay, RelayProcess)  # dossiers' default: the event loop serves HTTP only
    relay.restart_delay = 3.0  # long enough for /ready to be seen down
    grant = await seed(svc, "1000020", "noe")
    headers = svc.token("noe", [grant])
    params = {"motif": "accompagnement_social"}
    before = await end_offsets(stack["kafka"], named("dossier.consultations"))

    async def delivered(audit_id: str) -> bool:
        return audit_id in await ids_since(stack["kafka"], before)

    first = (await svc.client.get("/v1/dossiers/1000020", params=params, headers=headers)).headers[
        "X-Audit-Id"
    ]
    await eventually(lambda: delivered(first), within=20)
    await eventually(lambda: _ready(svc), within=20)

    async def counted() -> bool:  # the child's count reaches the service's own /metrics
        metrics = (await svc.client.get("/metrics")).text
        return f'cdap_outbox_published_total{{topic="{named("dossier.consultations")}"}}' in metrics

    await eventually(counted, within=10)

    assert relay.process is not None
    os.kill(relay.process.pid, signal.SIGKILL)

    async def reported() -> bool:
        r = await svc.client.get("/ready")
        return r.status_code == 503 and "relay" in r.json()["failed"]

    await eventually(reported, within=3, interval=0.05)
    assert relay.exits == 1

    # Started again: ready, and the consultations made meanwhile are delivered by the new process.
    second = (await svc.client.get("/v1/dossiers/1000020", params=params, headers=headers)).headers[
        "X-Audit-Id"
    ]
    await eventually(lambda: _ready(svc), within=20)
    await eventually(lambda: delivered(second), within=20)


async def _ready(svc: Service) -> bool:
    return (await svc.client.get("/ready")).status_code == 200


async def test_a_lookup_wakes_the_relay_process_without_waiting_for_its_poll(
    stack: dict[str, str], service_factory: Callable[..., Awaitable[Service]]
) -> None:
    # A relay that would look for rows once an hour: only the lookup's wake can bring its consultation.
    svc = await service_factory(outbox_poll_interval_seconds=3600)
    grant = await seed(svc, "1000021", "noe")
    await eventually(lambda: relay_parked(svc.settings.database_url), within=20)
    before = await end_offsets(stack["kafka"], named("dossier.consultations"))
    response = await svc.client.get(
        "/v1/dossiers/1000021", params={"motif": "accompagnement_social"}, headers=svc.token("noe", [grant])
    )
    audit_id = response.headers["X-Audit-Id"]

    async def delivered() -> bool:
        return audit_id in await ids_since(stack["kafka"], before)

    await eventually(delivered, within=20)
