"""pytest fixtures for tests against real Kafka and PostgreSQL (load with `-p cdap_shared.testing`).

Where the parts come from, in order: `CDAP_KAFKA_BOOTSTRAP` / `CDAP_DATABASE_URL` when set; else
testcontainers when a Docker engine answers; else the local stack (`make up`, which `make test` runs).
Each test gets its own throwaway database and its own topics, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cdap_shared.envelope import new_event_id
from cdap_shared.topics import ensure_topics

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_DATABASE = "postgresql+asyncpg://cdap:cdap@127.0.0.1:5432/postgres"
# Where the local stack's SMTP sink stores mail (see deploy/local/stack.sh).
MAIL_DIR = os.environ.get("CDAP_MAIL_DIR", str(Path(__file__).resolve().parents[3] / ".stack" / "mail"))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    """`{"kafka": bootstrap, "database": admin SQLAlchemy URL}` for the run."""
    kafka = os.environ.get("CDAP_KAFKA_BOOTSTRAP")
    database = os.environ.get("CDAP_DATABASE_URL")
    if kafka and database:
        yield {"kafka": kafka, "database": database}
        return
    if _port_open("127.0.0.1", 9092) and _port_open("127.0.0.1", 5432):
        yield {"kafka": kafka or LOCAL_KAFKA, "database": database or LOCAL_DATABASE}
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]

        with KafkaContainer().with_kraft() as k, PostgresContainer("postgres:16", driver="asyncpg") as p:
            yield {"kafka": k.get_bootstrap_server(), "database": p.get_connection_url()}
        return
    pytest.fail("No Kafka/PostgreSQL: run `make up` (or set CDAP_KAFKA_BOOTSTRAP and CDAP_DATABASE_URL).")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def make_database(stack: dict[str, str]) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory of throwaway databases (SQLAlchemy URLs), dropped after the test."""
    created: list[str] = []
    admin_url = plain_dsn(stack["database"])

    async def make() -> str:
        name = f"cdap_test_{new_event_id().replace('-', '')[-16:]}"
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return _with_database(stack["database"], name)

    yield make
    conn = await asyncpg.connect(admin_url)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(make_database: Callable[[], Awaitable[str]]) -> str:
    return await make_database()


@pytest.fixture
async def make_topic(stack: dict[str, str]) -> Callable[[str], Awaitable[str]]:
    """Factory of fresh topics (with their `.dlq`) named after a base topic, e.g. `identity.events.t1234`."""

    async def make(base: str = "test") -> str:
        name = f"{base}.t{new_event_id().replace('-', '')[-12:]}"
        await ensure_topics(stack["kafka"], [name, f"{name}.dlq"], partitions=3)
        return name

    return make


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns a truthy value; fail with the last value after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last value: {last!r})")


class TokenMinter:
    """Signs access tokens the way identity does, with a key of its own (tests of the other services)."""

    def __init__(self, kid: str = "test-key") -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.kid = kid
        self.key = Ed25519PrivateKey.generate()

    @property
    def jwks(self) -> dict[str, Any]:
        import json

        import jwt

        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def verifier(self) -> Any:
        from cdap_shared.auth import TokenVerifier

        return TokenVerifier(None, "cdap", "cdap-identity", keys=self.jwks)

    def mint(
        self,
        sub: str,
        *,
        roles: list[str] | None = None,
        grants: list[dict[str, str]] | None = None,
        org: str | None = None,
        ttl: int = 300,
    ) -> str:
        import time

        import jwt

        now = int(time.time())
        claims = {
            "sub": sub,
            "org": org,
            "roles": roles or ["partner_user"],
            "grants": grants or [],
            "aud": "cdap",
            "iss": "cdap-identity",
            "iat": now,
            "exp": now + ttl,
            "jti": new_event_id(),
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


def mails_to(folder: str, address: str) -> list[str]:
    """The raw text of every `.eml` the SMTP sink stored for `address`, oldest first."""
    from email import message_from_bytes, policy

    found = []
    for path in sorted(Path(folder).glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if address.lower() in str(message.get("To", "")).lower():
            body = message.get_body(preferencelist=("plain",))
            found.append(f"Subject: {message['Subject']}\n\n{body.get_content() if body else ''}")
    return found
