"""A running audit service (real PostgreSQL and Kafka, its own database and topics) and event builders."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from cdap_audit.app import build
from cdap_audit.config import Settings
from cdap_audit.rules import DEFAULT_RULES
from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent
from cdap_testing import InProcess, TokenMinter, eventually, free_port, plain_dsn

SERVICE_DIR = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def daytime_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped rules without their night rule: events stamped "now" would otherwise raise a
    warning (an extra alert entry) whenever the suite runs at night in Paris. The night rule has its
    own tests with explicit times (test_alerts.py, test_rules.py)."""
    blocks = DEFAULT_RULES.read_text().split("[[rules]]")
    kept = [blocks[0], *(b for b in blocks[1:] if 'kind = "night"' not in b)]
    assert len(kept) < len(blocks), "the shipped rules have no night rule any more: drop this fixture"
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text("[[rules]]".join(kept))
    return path


TOPIC_SETTINGS = (
    "identity_topic",
    "access_topic",
    "consultations_topic",
    "alerts_topic",
    "checkpoints_topic",
)


def consulted(
    actor: str = "alice",
    numero: str = "1000001",
    *,
    decision: ev.Decision = "granted",
    reason: str | None = None,
    at: datetime | None = None,
    organisation_id: str | None = "org-1",
    client_ip: str | None = "10.1.2.3",
    trace_id: str | None = None,
    motif: str = "accompagnement_social",
) -> CloudEvent:
    """A `dossier.consulted` event as the dossiers service writes it (time settable)."""
    data = ev.DossierConsulted(
        actor=actor,
        organisation_id=organisation_id,
        profile="T1",
        grant_id=f"g-{actor}",
        numero=numero,
        motif=motif,
        decision=decision,
        reason=reason,
        sections=["adresse", "identite"] if decision == "granted" else [],
        policy_version="2026.11-1",
        client_ip=client_ip,
        trace_id=trace_id,
    )
    event = ev.make_event("dossier.consulted", source="/cdap/dossiers", subject=numero, data=data)
    return event.model_copy(update={"time": at}) if at else event


def searched(actor: str, *, at: datetime | None = None, numeros: list[str] | None = None) -> CloudEvent:
    """A `dossier.searched` event as the dossiers service writes it (time settable)."""
    data = ev.DossierSearched(
        actor=actor,
        organisation_id="org-1",
        profile="T1",
        grant_id=f"g-{actor}",
        motif="accompagnement_social",
        criteria=["nom", "date_naissance"],
        decision="granted",
        numeros=numeros or ["1000001"],
        policy_version="2026.11-1",
        client_ip="10.1.2.3",
    )
    event = ev.make_event("dossier.searched", source="/cdap/dossiers", subject=actor, data=data)
    return event.model_copy(update={"time": at}) if at else event


def suspended(user: str, by: str = "admin-1") -> CloudEvent:
    data = ev.UserRef(user_id=user, by=by, reason="left the organisation")
    return ev.make_event("identity.user.suspended", source="/cdap/identity", subject=user, data=data)


@dataclass(kw_only=True)
class Audit(InProcess):
    settings: Settings
    minter: TokenMinter

    def topic_for(self, event: CloudEvent) -> str:
        prefix = event.type.split(".")[0]
        name = {"identity": "identity_topic", "access": "access_topic", "dossier": "consultations_topic"}
        attribute = name.get(prefix, "alerts_topic")
        return str(getattr(self.settings, attribute))

    async def publish(self, *events: CloudEvent, headers: list[tuple[str, bytes]] | None = None) -> None:
        for event in events:
            await self.producer.send_and_wait(
                self.topic_for(event), event.to_bytes(), key=event.subject.encode(), headers=headers
            )

    def headers(self, roles: list[str] | None = None) -> dict[str, str]:
        token = self.minter.mint("auditor-1", roles=roles or ["auditor"], org=None)
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params, headers=self.headers())
        assert response.status_code == 200, response.text
        return response.json()

    async def all_entries(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.get(
                "/v1/entries", limit=1000, **params, **({"cursor": cursor} if cursor else {})
            )
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def wait_for_entries(self, n: int, within: float = 30.0) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            items = await self.all_entries()
            return items if len(items) >= n else None

        return list(await eventually(enough, within=within))

    async def sql(self, query: str, *args: Any) -> Any:
        """Run SQL directly on the service's database, as an intruder (or an operator) would."""
        conn = await asyncpg.connect(plain_dsn(self.settings.database_url))
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def roll_back(self, size: int) -> None:
        """Cut a log of fewer than 256 entries back to `size` entries as someone with write access to
        the database could: entries, the tree's one tile (its first `size` leaf hashes stay), its size
        and the checkpoints of larger trees."""
        assert await self.sql("SELECT 1 FROM merkle_tile WHERE (level, idx) <> (0, 0)") == [], "one tile only"
        await self.sql("DELETE FROM entry WHERE leaf_index >= $1", size)
        await self.sql("UPDATE merkle_tile SET hashes = substring(hashes FOR 32 * $1::int)", size)
        await self.sql("UPDATE tree_state SET size = $1", size)
        await self.sql("DELETE FROM checkpoint WHERE tree_size > $1", size)


@pytest.fixture
async def audit_factory(
    stack: dict[str, str],
    migrated_database: Callable[[str], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    start_app: Callable[..., Awaitable[Audit]],
    daytime_rules: Path,
) -> Callable[..., Awaitable[Audit]]:
    """`await audit_factory(**settings)`; pass a previous `settings=` to restart on the same database."""

    async def make(settings: Settings | None = None, **overrides: Any) -> Audit:
        if settings is None:
            topics = {name: await make_topic(name.removesuffix("_topic")) for name in TOPIC_SETTINGS}
            settings = Settings(
                database_url=await migrated_database(SERVICE_DIR),
                kafka_bootstrap=stack["kafka"],
                consumer_group=f"audit-{random.random()}",
                checkpoint_interval=0.2,
                **{"alert_rules_path": daytime_rules, **topics, **overrides},
            )
        minter = TokenMinter()
        app = build(settings, verifier=minter.verifier())
        return await start_app(Audit, app, "http://audit", settings=settings, minter=minter)

    return make


@pytest.fixture
async def audit(audit_factory: Callable[..., Awaitable[Audit]]) -> Audit:
    return await audit_factory()


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` over real HTTP on a free port (its lifespan is already running); yields the URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _true(server.started), within=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _true(value: bool) -> bool:
    return value


def now() -> datetime:
    return datetime.now(UTC)
