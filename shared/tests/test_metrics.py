"""What an operator reads on /metrics: request durations per route template, the outbox backlog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cdap_shared import events as ev
from cdap_shared.db import asyncpg_dsn
from cdap_shared.http import create_app
from cdap_shared.periodic import Periodic
from cdap_shared.relay import count_backlog
from cdap_testing import eventually

from .pipeline import build_pipeline, close_pipeline
from .samples import SAMPLES


def _histogram_counts(text: str, name: str) -> dict[tuple[str, str, str], float]:
    """(method, route, status) -> observation count of histogram `name`."""
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_count":
                labels = sample.labels
                counts[labels["method"], labels["route"], labels["status"]] = sample.value
    return counts


async def test_request_durations_are_labelled_by_route_template_not_by_path() -> None:
    app = create_app(title="t")

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        before = _histogram_counts((await client.get("/metrics")).text, "cdap_http_request_duration_seconds")
        for thing_id in (1, 2, 3):
            assert (await client.get(f"/v1/things/{thing_id}")).status_code == 200
        assert (await client.get("/v1/things/not-a-number")).status_code == 422
        assert (await client.get("/made/up/path/4242")).status_code == 404
        after = _histogram_counts((await client.get("/metrics")).text, "cdap_http_request_duration_seconds")

    def added(key: tuple[str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert added(("GET", "/v1/things/{thing_id}", "200")) == 3
    assert added(("GET", "/v1/things/{thing_id}", "422")) == 1
    assert added(("GET", "unmatched", "404")) == 1
    assert not any("4242" in route or route == "/v1/things/1" for _, route, _ in after)


@pytest.mark.stack
async def test_outbox_backlog_counts_unsent_rows_until_the_relay_publishes_them(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> None:
    p = await build_pipeline(stack, make_database, make_topic)
    pool = await asyncpg.create_pool(asyncpg_dsn(p.producer_url), min_size=1, max_size=2)
    counter = Periodic("outbox-backlog", lambda: count_backlog(pool), 0.1, grace=0)
    counter.start()
    try:
        await p.write(
            *(
                ev.make_event(
                    "dossier.consulted",
                    source="/t",
                    subject=f"12345{i:02d}",
                    data=SAMPLES["dossier.consulted"],
                )
                for i in range(7)
            )
        )

        async def backlog_is(n: int) -> bool:
            return REGISTRY.get_sample_value("cdap_outbox_backlog") == n

        await eventually(lambda: backlog_is(7))
        p.start_relay()
        await eventually(lambda: backlog_is(0))
        assert await p.unsent() == 0
    finally:
        await counter.stop()
        await pool.close()
        await close_pipeline(p)
