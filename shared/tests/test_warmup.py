"""A service is ready only once warm: `/ready` answers 503 until every warm-up step has succeeded, and a
step that fails (its dependency not up yet) is retried rather than given up."""

from __future__ import annotations

import asyncio

from httpx import ASGITransport, AsyncClient

from cdap_shared.http import create_app
from cdap_shared.warmup import WarmUp
from cdap_testing import eventually


async def test_ready_is_503_until_every_step_has_succeeded_and_a_failing_step_is_retried() -> None:
    attempts: list[str] = []
    keys_fetched = asyncio.Event()

    async def open_connections() -> None:
        attempts.append("connections")
        if len(attempts) < 3:
            raise ConnectionError("the database is not up yet")

    async def fetch_keys() -> None:
        await keys_fetched.wait()

    warm_up = WarmUp(open_connections, fetch_keys, retry_every=0.01)
    app = create_app(title="t", ready_checks={"warm_up": warm_up.check})

    async def retried() -> bool:
        return len(attempts) == 3

    async def ready(client: AsyncClient) -> bool:
        return (await client.get("/ready")).status_code == 200

    transport = ASGITransport(app=app)
    async with warm_up.running(), AsyncClient(transport=transport, base_url="http://t") as client:
        await eventually(retried)
        r = await client.get("/ready")
        assert r.status_code == 503 and "warm_up" in r.json()["failed"]
        keys_fetched.set()
        await eventually(lambda: ready(client))
    assert attempts == ["connections"] * 3
