"""Exactly once across a crash: the audit service, a real uvicorn process, is killed (SIGKILL) in the
middle of a large backlog, restarted, and must end with every event once in a gapless tree whose
every earlier checkpoint is consistent with the new one."""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from cdap_audit.merkle import verify_consistency
from cdap_shared.relay import make_producer
from cdap_testing import JwksServer, ServiceProcess, TokenMinter, eventually, plain_dsn

from . import rfc9162
from .conftest import SERVICE_DIR, consulted

pytestmark = pytest.mark.stack

EVENTS = 12_000
BATCH = 1_000
DAY = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


async def test_killed_mid_batch_and_restarted_every_event_is_logged_once(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    from cdap_shared.migrations import upgrade_to_head

    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url)
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "no-rules"\n')  # alerts would add entries of their own
    topics = {
        name: await make_topic(name)
        for name in ("identity", "access", "consultations", "alerts", "checkpoints")
    }
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    env = {
        "CDAP_DATABASE_URL": url,
        "CDAP_KAFKA_BOOTSTRAP": stack["kafka"],
        "CDAP_JWKS_URL": jwks.url,
        **{f"CDAP_{name.upper()}_TOPIC": topic for name, topic in topics.items()},
        "CDAP_CONSUMER_GROUP": f"audit-crash-{topics['consultations']}",
        "CDAP_CONSUMER_BATCH": str(BATCH),
        "CDAP_CHECKPOINT_INTERVAL": "0.2",
        "CDAP_ALERT_RULES_PATH": str(rules),
        "CDAP_LOG_LEVEL": "WARNING",
    }
    events = [
        consulted(f"user-{i % 97}", f"{1_000_000 + i:07d}", at=DAY + timedelta(seconds=i))
        for i in range(EVENTS)
    ]
    producer = make_producer(stack["kafka"])
    await producer.start()
    try:
        sent = [
            await producer.send(topics["consultations"], e.to_bytes(), key=e.subject.encode()) for e in events
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    conn = await asyncpg.connect(plain_dsn(url))
    service = ServiceProcess("cdap_audit", env, tmp_path / "audit.log")
    try:
        await asyncio.to_thread(service.start, 60.0)

        async def size() -> int:
            return int(await conn.fetchval("SELECT size FROM tree_state WHERE id = 1"))

        async def some_in() -> int | None:
            return n if (n := await size()) > 0 else None

        await eventually(some_in, within=120, interval=0.01)
        service.stop(signal.SIGKILL)
        at_kill = await size()
        assert at_kill < EVENTS, "the backlog was all in before the kill: nothing was tested"
        saved = [
            (int(r["tree_size"]), bytes(r["root_hash"])) for r in await conn.fetch("SELECT * FROM checkpoint")
        ]

        await asyncio.to_thread(service.start, 60.0)
        await eventually(lambda: _at_least(size, EVENTS), within=300)
        await asyncio.sleep(1)  # anything doubled would be appended by now

        rows = await conn.fetch("SELECT leaf_index, event_id, leaf FROM entry ORDER BY leaf_index")
        assert [r["leaf_index"] for r in rows] == list(range(EVENTS))  # gapless, and no extra entry
        assert sorted(r["event_id"] for r in rows) == sorted(e.id for e in events)  # each event once
        assert await size() == EVENTS

        token = minter.mint("auditor-1", roles=["auditor"], org=None)
        async with httpx.AsyncClient(
            base_url=service.url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            latest = await eventually(lambda: _checkpoint_of(http, EVENTS), within=30)
            root = base64.b64decode(latest["root_hash"])
            assert root == rfc9162.mth([bytes(r["leaf"]) for r in rows])
            for old_size, old_root in saved:
                proof = await http.get("/v1/proofs/consistency", params={"first": old_size, "second": EVENTS})
                hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
                assert verify_consistency(old_size, EVENTS, old_root, root, hashes), old_size
    finally:
        service.stop()
        jwks.close()
        await conn.close()


async def _at_least(size: Callable[[], Awaitable[int]], n: int) -> bool:
    return await size() >= n


async def _checkpoint_of(http: httpx.AsyncClient, size: int) -> dict[str, str] | None:
    response = await http.get("/v1/checkpoints/latest", headers={"Accept": "application/json"})
    body = response.json() if response.status_code == 200 else None
    return body if body and body["tree_size"] == size else None
