"""Auditors follow the log live and are told of alerts, over the whole stack (every service a process).

An auditor's stream receives a lookup's entry after its response (the arrival time is measured and
printed, not asserted), with the names of the actor and organisation; a stream dropped and resumed
from its `Last-Event-ID` gets exactly the entries made meanwhile; a critical alert sends one mail to
the department's auditor, who acknowledges it, and the acknowledgement is an entry of the log.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cdap_testing import plain_dsn
from cdap_testing.system import MAILBOX, System, activate_and_login, caf_staff, wait_ready

from .test_revocation import dossier_in_reach, provisioned_partner

pytestmark = pytest.mark.stack

# Only a rule the test sets off on purpose: three refusals for going over the rate limit.
RULES = """
version = "system-stream"
timezone = "Europe/Paris"

[[rules]]
name = "limit_hammering"
kind = "denials"
severity = "critical"
decisions = ["rate_limited"]
count = 3
window_minutes = 5
"""
MEASURED_LOOKUPS = 20


class Stream:
    """An auditor's open stream, read in the background: each entry with the moment it arrived."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.entries: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        data: list[str] = []
        async for line in self.response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                self.entries.append((time.monotonic(), json.loads("".join(data))))
                data = []
                self.arrived.set()

    async def entry(self, event_id: str, within: float = 60) -> tuple[float, dict[str, Any]]:
        """The entry of `event_id` and when it arrived (a guard of `within` seconds, not a measure)."""
        async with asyncio.timeout(within):
            while True:
                for arrived, item in self.entries:
                    if item["event_id"] == event_id:
                        return arrived, item
                self.arrived.clear()
                await self.arrived.wait()

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.response.aclose()


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, audit: str, headers: dict[str, str], **params: Any
) -> AsyncIterator[Stream]:
    request = client.build_request("GET", f"{audit}/v1/entries/stream", params=params, headers=headers)
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    stream = Stream(response)
    try:
        yield stream
    finally:
        await stream.close()


async def test_a_lookup_reaches_the_auditor_s_stream_and_a_critical_alert_reaches_the_auditor(
    system: System, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    audit_env = {"CDAP_ALERT_RULES_PATH": str(rules), "CDAP_ALERT_NOTIFY_SECONDS": "0.5"}
    await system.start("identity", "dossiers", "audit", extra_env={"audit": audit_env})
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=100)) as client:
        await wait_ready(client, *(system.url(name) for name in ("identity", "dossiers", "audit")))
        admin, email, _ = await provisioned_partner(system, client)
        user = await activate_and_login(client, system.url("identity"), email)
        auditor = await caf_staff(system, client, admin, "auditor")
        audit = system.url("audit")

        numero, lookup, params, _ = await dossier_in_reach(system, client, user["headers"], seed=7)

        # 1. Each lookup's entry reaches the open stream after its response: how long after, measured.
        mine = {"actor": user["user_id"], "type": "dossier.consulted"}
        delays: list[float] = []
        async with open_stream(client, audit, auditor["headers"], **mine) as stream:
            for _ in range(MEASURED_LOOKUPS):
                r = await client.get(lookup, params=params, headers=user["headers"])
                answered = time.monotonic()
                assert r.status_code == 200, r.text
                arrived, item = await stream.entry(r.headers["X-Audit-Id"])
                delays.append(arrived - answered)
        assert item["actor"] == user["user_id"] and item["subject"] == numero
        assert (item["actor_name"], item["organisation_name"]) == ("Paul Roux", "CCAS de Rouen")
        last = item["index"]

        # 2. Dropped: lookups go on meanwhile; resumed from the last id, it gets exactly those.
        missed = []
        for _ in range(5):
            r = await client.get(lookup, params=params, headers=user["headers"])
            missed.append(r.headers["X-Audit-Id"])
        resume = auditor["headers"] | {"Last-Event-ID": str(last)}
        async with open_stream(client, audit, resume, **mine) as resumed:
            await resumed.entry(missed[-1])
            got = [item for _, item in resumed.entries]
        assert [i["event_id"] for i in got] == missed  # no gap, no duplicate, in log order
        assert all(i["index"] > last for i in got)

        # 3. Over the limit: refusals, a critical alert, one mail to the department's auditor.
        burst = await asyncio.gather(
            *[client.get(lookup, params=params, headers=user["headers"]) for _ in range(40)]
        )
        assert sum(r.status_code == 429 for r in burst) >= 3
        alert = await critical_alert(client, audit, auditor["headers"])
        assert (alert["actor"], alert["actor_name"], alert["state"]) == (user["user_id"], "Paul Roux", "open")
        mails = await mailed(auditor["email"], alert["alert_id"])
        assert "alerte critique (limit_hammering)" in mails[0] and "CCAS de Rouen" in mails[0]
        assert await queued_to(system, auditor["email"]) == 1  # one mail queued for this auditor, sent
        assert len(await mailed(auditor["email"], alert["alert_id"])) == 1

        # 4. The auditor acknowledges it: the alert's state changes, and the log says who did it.
        path = f"{audit}/v1/alerts/{alert['alert_id']}"
        comment = {"comment": "Appel au CCAS : script de consultation arrêté."}
        acked = await client.post(f"{path}/acknowledge", json=comment, headers=auditor["headers"])
        assert acked.status_code == 200 and acked.json()["state"] == "acknowledged", acked.text
        entry = await logged(client, audit, auditor["headers"], "audit.alert.acknowledged", alert["alert_id"])
        assert (entry["actor"], entry["actor_name"]) == (auditor["user_id"], "Test Auditor")

    report = {
        "lookups": len(delays),
        "median_ms": round(statistics.median(delays) * 1000, 1),
        "p90_ms": round(statistics.quantiles(delays, n=10)[-1] * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
    }
    print(f"\nlookup response -> auditor's stream: {report}")


async def critical_alert(client: httpx.AsyncClient, audit: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(300):
        r = await client.get(f"{audit}/v1/alerts", params={"severity": "critical"}, headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["items"]:
            return dict(r.json()["items"][0])
        await asyncio.sleep(0.2)
    raise AssertionError("no critical alert was raised")


async def mailed(address: str, alert_id: str) -> list[str]:
    for _ in range(300):
        found = [m for m in MAILBOX.to(address) if alert_id in m]
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no mail of alert {alert_id} for {address}")


async def queued_to(system: System, address: str) -> int:
    """How many mails the audit queued for `address`, once none is waiting to be sent."""
    conn = await asyncpg.connect(plain_dsn(system.databases["audit"]))
    try:
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL"):
                break
            await asyncio.sleep(0.2)
        return int(await conn.fetchval('SELECT count(*) FROM mail_outbox WHERE "to" = $1', address))
    finally:
        await conn.close()


async def logged(
    client: httpx.AsyncClient, audit: str, headers: dict[str, str], event_type: str, subject: str
) -> dict[str, Any]:
    for _ in range(300):
        r = await client.get(f"{audit}/v1/entries", params={"type": event_type}, headers=headers)
        assert r.status_code == 200, r.text
        found = [e for e in r.json()["items"] if e["subject"] == subject]
        if found:
            return dict(found[0])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {event_type} entry for {subject}")
