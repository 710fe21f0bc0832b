"""A running identity service (real PostgreSQL, Kafka and SMTP sink) and helpers that act as its users."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest
from httpx import Response
from sqlalchemy import select, text

from cdap_identity import accounts
from cdap_identity.app import build
from cdap_identity.config import Settings
from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.mail import QueuedMail
from cdap_testing import MAIL_DIR, InProcess, eventually, mails_to

SERVICE_DIR = str(Path(__file__).resolve().parents[1])
STRONG = "Tr0ub4dor&3-horse-staple"
SIRETS = ["73282932000074", "55204944776279", "35600000000048", "44306184100047", "32929709700035"]


def unique_email(who: str = "user") -> str:
    return f"{who}.{new_event_id()[-12:]}@example.fr"


@dataclass(kw_only=True)
class Identity(InProcess):
    settings: Settings

    async def token(self, username: str, password: str, totp: str | None = None, **extra: str) -> Response:
        form = {"grant_type": "password", "username": username, "password": password, **extra}
        if totp:
            form["totp"] = totp
        return await self.client.post("/v1/token", data=form)

    async def activation_token_from_mail(self, email: str) -> str:
        async def mail() -> list[str]:
            return mails_to(MAIL_DIR, email)

        text = (await eventually(mail, within=15))[-1]
        match = re.search(r"/activate\?token=([A-Za-z0-9_\-]+)", text)
        assert match, text
        return match.group(1)

    async def activate(self, email: str, password: str = STRONG) -> dict[str, Any]:
        token = await self.activation_token_from_mail(email)
        r = await self.client.post("/v1/activations", json={"token": token, "password": password})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def caf_admin(self) -> dict[str, str]:
        """A CAF admin created as `cdap identity bootstrap` does, activated, with TOTP, logged in."""
        email = unique_email("admin")
        async with self.app.state.sessions() as session, session.begin():
            created = await accounts.create_account(
                session,
                email=email,
                family_name="Admin",
                given_name="CAF",
                roles=["caf_admin"],
                organisation_id=None,
                department="76",
                activation_hours=72,
            )
        r = await self.client.post(
            "/v1/activations", json={"token": created.activation_token, "password": STRONG}
        )
        secret = r.json()["totp_secret"]
        login = await self.token(email, STRONG, pyotp.TOTP(secret).now())
        assert login.status_code == 200, login.text
        return {
            "Authorization": f"Bearer {login.json()['access_token']}",
            "email": email,
            "totp": secret,
            "refresh": login.json()["refresh_token"],
            "id": r.json()["user_id"],
        }

    async def create_organisation(
        self, admin: dict[str, str], n_admins: int = 1, **overrides: Any
    ) -> dict[str, Any]:
        body = {
            "siret": overrides.pop("siret", SIRETS[0]),
            "name": "Logeo Seine",
            "kind": "bailleur",
            "department": "76",
            "convention": {"reference": "CONV-76-001", "valid_until": "2030-12-31"},
            "administrators": [
                {"email": unique_email("gestionnaire"), "family_name": "Durand", "given_name": "Claire"}
                for _ in range(n_admins)
            ],
            **overrides,
        }
        r = await self.client.post("/v1/organisations", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        return {**r.json(), "admin_emails": [a["email"] for a in body["administrators"]]}

    async def publish(self, topic: str, event: CloudEvent) -> None:
        await self.producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())

    async def forget_used_codes(self) -> None:
        """Let every account use the current TOTP code again (a test need not wait 30 s for the next)."""
        async with self.app.state.sessions() as s, s.begin():
            await s.execute(text("UPDATE user_account SET totp_last_step = NULL"))

    async def queued_mails(self) -> list[QueuedMail]:
        async with self.app.state.sessions() as s:
            return list((await s.execute(select(QueuedMail))).scalars().all())


def auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


@pytest.fixture
async def identity_factory(
    stack: dict[str, str],
    migrated_database: Callable[[str], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
    start_app: Callable[..., Awaitable[Identity]],
) -> Callable[..., Awaitable[Identity]]:
    async def make(**overrides: Any) -> Identity:
        settings = Settings(
            database_url=await migrated_database(SERVICE_DIR),
            kafka_bootstrap=stack["kafka"],
            access_topic=await make_topic("access.events"),
            alerts_topic=await make_topic("audit.alerts"),
            consumer_group=f"identity-{new_event_id()}",
            **overrides,
        )
        return await start_app(Identity, build(settings), "http://identity", settings=settings)

    return make


@pytest.fixture
async def idp(identity_factory: Callable[..., Awaitable[Identity]]) -> Identity:
    return await identity_factory()


def now() -> datetime:
    return datetime.now(UTC)
