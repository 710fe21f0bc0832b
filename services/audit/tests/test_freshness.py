"""`GET /v1/freshness`: until when the log is complete. Ingestion is held back for real (the entries' table
locked, as a slow or failing database would), events are published meanwhile: the log says it lags, how
many events wait, that it is stalled, and "à jour au" stays before them until it catches up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from cdap_testing import eventually, plain_dsn

from .conftest import Audit, consulted

pytestmark = pytest.mark.stack


def _moment(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(body["as_of"]).replace("Z", "+00:00"))


async def test_the_log_says_until_when_it_is_complete_and_when_ingestion_lags(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    audit = await audit_factory(consumer_watch_interval_seconds=0.2, consumer_stall_seconds=1)
    await audit.publish(consulted("alice", "1000001"))
    await audit.wait_for_entries(1)

    async def caught_up_after(moment: datetime) -> dict[str, Any] | None:
        body: dict[str, Any] = await audit.get("/v1/freshness")
        done = body["caught_up"] and body["as_of"] and _moment(body) > moment
        return body if done else None

    fresh = await eventually(lambda: caught_up_after(datetime(2000, 1, 1, tzinfo=UTC)), within=30)
    assert fresh["waiting"] == 0 and fresh["stalled"] is False

    # Ingestion held back: it cannot write entries while another transaction locks their table.
    lock = await asyncpg.connect(plain_dsn(audit.settings.database_url))
    transaction = lock.transaction()
    await transaction.start()
    try:
        await lock.execute("LOCK TABLE entry IN ACCESS EXCLUSIVE MODE")
        await audit.publish(*(consulted("bob", f"200000{i}") for i in range(5)))
        published = datetime.now(UTC)  # every sample from now on sees them waiting

        async def lagging() -> dict[str, Any] | None:
            body: dict[str, Any] = await audit.get("/v1/freshness")
            return body if body["waiting"] >= 5 and body["stalled"] else None

        lag = await eventually(lagging, within=30)
        assert lag["caught_up"] is False
        assert _moment(lag) < published  # complete only up to before bob's consultations were in Kafka
    finally:
        await transaction.rollback()
        await lock.close()

    back = await eventually(lambda: caught_up_after(published), within=30)
    assert back["waiting"] == 0 and back["stalled"] is False
    assert {e["subject"] for e in await audit.all_entries(actor="bob")} == {f"200000{i}" for i in range(5)}


async def test_the_freshness_is_for_auditors_only(audit: Audit) -> None:
    refused = await audit.client.get("/v1/freshness", headers=audit.headers(["caf_admin"]))
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
