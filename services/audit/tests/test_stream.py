"""The live stream `GET /v1/entries/stream` (Server-Sent Events), read over real HTTP as a client would."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from cdap_audit.client import AuditClient

from .conftest import Audit, consulted, serve, suspended
from .test_cli import token
from .test_http import ROLES

pytestmark = pytest.mark.stack


class Events:
    """An open stream, read event by event: ("comment", text), ("retry", ms) or ("entry", item)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = self._parse()

    async def _parse(self) -> AsyncIterator[tuple[str, Any]]:
        fields: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if line.startswith(":"):
                yield "comment", line[1:].strip()
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif "retry" in fields:
                yield "retry", int(fields.pop("retry"))
            elif fields:
                item = json.loads(fields["data"])
                assert fields["event"] == "entry" and fields["id"] == str(item["index"])
                yield "entry", item
                fields = {}

    async def next(self) -> tuple[str, Any]:
        # A guard, not a measure: a stream that hangs fails the test instead of blocking it.
        return await asyncio.wait_for(anext(self._events), 60)

    async def connected(self) -> None:
        """Wait for the `retry` field: sent once the stream's starting point is fixed."""
        assert self.response.status_code == 200, await self.response.aread()
        assert self.response.headers["content-type"].startswith("text/event-stream")
        assert (await self.next())[0] == "retry"

    async def entries(self, n: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while len(items) < n:
            kind, value = await self.next()
            if kind == "entry":
                items.append(value)
        return items


@asynccontextmanager
async def stream(http: httpx.AsyncClient, audit: Audit, **params: Any) -> AsyncIterator[Events]:
    headers = audit.headers() | params.pop("headers", {})
    async with http.stream("GET", "/v1/entries/stream", params=params, headers=headers) as response:
        events = Events(response)
        await events.connected()
        yield events


async def test_a_client_sees_new_entries_as_they_are_logged_filtered_as_listed(audit: Audit) -> None:
    await audit.publish(consulted("alice", "1000001"))
    await audit.wait_for_entries(1)
    async with (
        serve(audit.app) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        stream(http, audit) as everything,
        stream(http, audit, type="identity.user.suspended") as only,
    ):
        published = time.monotonic()
        await audit.publish(suspended("bob"))
        [first] = await everything.entries(1)
        latency = time.monotonic() - published
        await audit.publish(consulted("carol", "1000002"), suspended("dave"))
        rest = await everything.entries(2)
        filtered = await only.entries(2)
    print(f"published -> event on the stream: {latency * 1000:.0f} ms")  # a bench figure, not asserted
    assert [first["index"], *(e["index"] for e in rest)] == [1, 2, 3]  # from now on: entry 0 not sent
    listed = await audit.all_entries()
    assert [first, *rest] == listed[1:4]  # the data is the entry exactly as GET /v1/entries lists it
    assert [e["subject"] for e in filtered] == ["bob", "dave"]


async def test_a_reconnecting_client_resumes_after_its_last_event_id(audit: Audit) -> None:
    await audit.publish(*[suspended(f"u{i}") for i in range(5)])
    await audit.wait_for_entries(5)
    async with serve(audit.app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        async with stream(http, audit, from_index=0) as first:
            before = await first.entries(3)
        # The connection is gone; entries keep coming meanwhile.
        await audit.publish(*[suspended(f"v{i}") for i in range(4)])
        await audit.wait_for_entries(9)
        last_id = {"Last-Event-ID": str(before[-1]["index"])}
        async with stream(http, audit, from_index=0, headers=last_id) as second:
            after = await second.entries(6)
    indices = [e["index"] for e in before + after]
    assert indices == list(range(9)), indices  # no gap, no duplicate


async def test_heartbeats_and_the_client_resuming_streams_the_server_ends(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    audit = await audit_factory(stream_heartbeat_seconds=0.3, stream_lifetime_seconds=1.0)
    async with serve(audit.app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        async with stream(http, audit, from_index=0) as idle:
            assert await idle.next() == ("comment", "heartbeat")

        # `cdap audit tail`'s client: streams end every second here, it reconnects after its last entry.
        def follow(n: int) -> list[int]:
            with AuditClient(url, token(audit)) as client:
                return [item["index"] for item in itertools.islice(client.follow(0), n)]

        reader = asyncio.create_task(asyncio.to_thread(follow, 12))
        for i in range(4):
            await audit.publish(*[suspended(f"w{i}-{j}") for j in range(3)])
            await asyncio.sleep(1.2)  # spread over several stream lifetimes
        assert await asyncio.wait_for(reader, 60) == list(range(12))


async def test_only_auditors_may_stream_and_bad_filters_are_refused(audit: Audit) -> None:
    cases = [(audit.headers(roles) if roles else {}, status, {}) for roles, status in ROLES if status != 200]
    cases += [
        (audit.headers(), 422, {"from_index": "-1"}),
        (audit.headers(), 422, {"dossier": "12"}),
        (audit.headers(), 400, {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        (audit.headers() | {"Last-Event-ID": "abc"}, 422, {}),
    ]
    for headers, status, params in cases:
        response = await audit.client.get("/v1/entries/stream", headers=headers, params=params)
        assert response.status_code == status, (headers, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
