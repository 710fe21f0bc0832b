"""A running dossiers service (real PostgreSQL and Kafka, own database and topics) and a feed to fill it."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cdap_cli.caf_feed import build_pools, make_dossier
from cdap_dossiers.app import build
from cdap_dossiers.config import Settings
from cdap_dossiers.models import Dossier, GrantRecord
from cdap_shared import events as ev
from cdap_testing import InProcess, TokenMinter, eventually

SERVICE_DIR = str(Path(__file__).resolve().parents[1])
LANDLORD = "73282932000074"
OTHER_LANDLORD = "55204944776279"
RSA_BODY = "22760540900019"


@dataclass(kw_only=True)
class Service(InProcess):
    settings: Settings
    minter: TokenMinter
    rng: random.Random

    async def publish(
        self, event_type: str, subject: str, data: ev.EventData, topic: str | None = None
    ) -> None:
        event = ev.make_event(event_type, source="/test", subject=subject, data=data)
        target = topic or (
            self.settings.caf_topic if event_type.startswith("caf.") else self.settings.identity_topic
        )
        await self.producer.send_and_wait(target, event.to_bytes(), key=subject.encode())

    async def add_dossier(self, numero: str, department: str = "76", **overrides: Any) -> ev.DossierUpserted:
        data = make_dossier(self.rng, POOLS, numero, department)
        data = data.model_copy(update=overrides)
        await self.publish("caf.dossier.upserted", numero, data)
        return data

    async def grant(
        self, user: str, profile: str, department: str = "76", siret: str = LANDLORD, days: int = 100
    ) -> dict[str, str]:
        grant_id = f"g-{user}-{profile}-{department}"
        today = date.today()
        await self.publish(
            "identity.grant.issued",
            user,
            ev.GrantIssued(
                grant_id=grant_id,
                user_id=user,
                organisation_id=f"org-{siret}",
                organisation_siret=siret,
                profile=profile,
                department=department,
                valid_from=today - timedelta(days=1),
                valid_until=today + timedelta(days=days),
            ),
        )
        return {"id": grant_id, "profile": profile, "department": department}

    def token(
        self, user: str, grants: list[dict[str, str]], roles: list[str] | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minter.mint(user, grants=grants, org='org-1', roles=roles)}"}

    async def wait_for_dossiers(self, n: int) -> None:
        await eventually(lambda: self._count(Dossier, n))

    async def wait_for_grants(self, n: int) -> None:
        await eventually(lambda: self._count(GrantRecord, n))

    async def _count(self, model: Any, n: int) -> bool:
        async with self.app.state.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(model))).scalar_one()) >= n


POOLS = build_pools(7, size=200)


@pytest.fixture
async def service_factory(
    stack: dict[str, str],
    migrated_database: Callable[[str], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    start_app: Callable[..., Awaitable[Service]],
) -> Callable[..., Awaitable[Service]]:
    async def make(**overrides: Any) -> Service:
        # A fresh database; a given one is reused as it is (a restart).
        url = overrides.pop("database_url", None) or await migrated_database(SERVICE_DIR)
        settings = Settings(
            database_url=url,
            kafka_bootstrap=overrides.pop("kafka_bootstrap", stack["kafka"]),
            caf_topic=await make_topic("caf.dossiers"),
            identity_topic=await make_topic("identity.events"),
            consumer_group=f"dossiers-{random.random()}",
            **overrides,
        )
        minter = TokenMinter()
        app = build(settings, verifier=minter.verifier())
        return await start_app(
            Service, app, "http://dossiers", settings=settings, minter=minter, rng=random.Random(3)
        )

    return make
