"""pytest fixtures for tests against real Kafka and PostgreSQL (load with `-p cdap_testing`).

Dev-only: no service or runtime tool imports this package (tests/test_boundaries.py checks it).

Where the parts come from, in order: `CDAP_KAFKA_BOOTSTRAP` / `CDAP_DATABASE_URL` when set; else
testcontainers when a Docker engine answers; else the local stack (`make up`, which `make test` runs).
Each test gets its own throwaway database and its own topics, so tests never see each other's data.
A test run (one pytest process) names the CDAP topics and consumer groups with a prefix of its own
(`CDAP_TOPIC_PREFIX=test-<id>.`, set for the process and the services it starts): the run creates
those topics, lets each service principal use them, and deletes both at the end, so a system left
running on the plain names (`make run`) never sees a test's events.
Unless `CDAP_KAFKA_USERNAME` is set, every Kafka client of the run (fixtures, services built in the test
process or started as processes) logs in as `cdap-test` with the local stack's password: tests make their
own topics and groups, which no service principal may touch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cdap_cli.kafka_grant import admin_client, grant, revoke
from cdap_cli.mailsink import mail_dir
from cdap_cli.topics import ensure_topics
from cdap_shared.envelope import new_event_id
from cdap_shared.kafka_access import PRINCIPALS, TEST, KafkaLogin, export_login
from cdap_shared.topics import all_topics, prefix

T = TypeVar("T")

LOCAL_KAFKA = "127.0.0.1:9092"
LOCAL_DATABASE = "postgresql+asyncpg://cdap:cdap@127.0.0.1:5432/postgres"
# Where the local stack's SMTP sink stores mail (see deploy/local/stack.sh).
MAIL_DIR = os.environ.get(
    "CDAP_MAIL_DIR", str(mail_dir(1025, Path(__file__).resolve().parents[3] / ".stack" / "mail"))
)


class Mailbox:
    """The SMTP sink's folder, each `.eml` parsed once: the sink keeps every earlier run's mail (thousands
    of files on a developer's machine), and `cdap_cli.mailsink.mails_to` re-reads them all on each call
    (seconds on a loaded machine), which polling for many recipients multiplies. The sink renames each
    file into place, so a file seen is complete."""

    def __init__(self, folder: str = MAIL_DIR) -> None:
        self.folder = Path(folder)
        self.parsed: dict[str, tuple[str, str]] = {}
        self.lock = threading.Lock()  # the browser tests read mail from worker threads

    def to(self, address: str) -> list[str]:
        """Like `mails_to`: the text ("Subject: ...\n\nbody") of each mail for `address`, oldest first."""
        from email import message_from_bytes, policy

        with self.lock:
            for path in self.folder.glob("*.eml"):
                if path.name not in self.parsed:
                    message = message_from_bytes(path.read_bytes(), policy=policy.default)
                    body = message.get_body(preferencelist=("plain",))
                    text = f"Subject: {message['Subject']}\n\n{body.get_content() if body else ''}"
                    self.parsed[path.name] = (str(message.get("To", "")).lower(), text)
            return [text for _, (to, text) in sorted(self.parsed.items()) if address.lower() in to]


_MAILBOXES: dict[str, Mailbox] = {}


def mailbox(folder: str = MAIL_DIR) -> Mailbox:
    """The run's one `Mailbox` on `folder`."""
    return _MAILBOXES.setdefault(str(folder), Mailbox(folder))


def mails_to(folder: str, address: str) -> list[str]:
    """The text of every mail the SMTP sink stored in `folder` for `address`, oldest first."""
    return mailbox(folder).to(address)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on `host:port` (a local stack's Kafka, PostgreSQL)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def docker_answers() -> bool:
    """Whether a Docker engine answers here (then the fixtures start Kafka and PostgreSQL in containers)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0  # noqa: S607
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_configure(config: pytest.Config) -> None:
    """The run's topic prefix, before anything reads it (`cdap_shared.topics.prefix` reads it once)."""
    os.environ["CDAP_TOPIC_PREFIX"] = f"test-{new_event_id().replace('-', '')[-12:]}."


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to completion from sync code, even where an event loop already runs in this thread
    (Playwright's sync API keeps one running while the browser tests set up their fixtures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    """`{"kafka": bootstrap, "database": admin SQLAlchemy URL}` for the run, with the run's topics."""
    with locate_stack() as found, run_topics(found["kafka"]):
        yield found


@contextlib.contextmanager
def run_topics(kafka: str) -> Iterator[None]:
    """The CDAP topics under the run's prefix, and (when the broker checks ACLs) each service
    principal's rights on them; both deleted at the end."""
    run_sync(ensure_topics(kafka))
    admin = _acl_admin(kafka)
    if admin is not None:
        grant(admin, {}, topic_prefix=prefix())
    try:
        yield
    finally:
        if admin is not None:
            # A broker gone at the end (fault tests) keeps the ACLs; they name topics no one else uses.
            with contextlib.suppress(Exception):
                revoke(admin, PRINCIPALS, prefix())
        run_sync(delete_topics(kafka, all_topics()))


def _acl_admin(kafka: str) -> Any:
    """An admin client as the test principal (a super user), or None when Kafka asks for no login."""
    login = KafkaLogin.from_env()
    if not login.username:
        return None
    return admin_client(kafka, login.username, login.password or "")


async def delete_topics(kafka: str, names: list[str]) -> None:
    """Delete `names`; a broker already gone (fault tests) keeps them, harmlessly."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        await admin.delete_topics([n for n in names if n in existing])
    except Exception:  # noqa: S110
        pass
    finally:
        await admin.close()


@contextlib.contextmanager
def locate_stack() -> Iterator[dict[str, str]]:
    """Where the parts are: the environment, else the local stack, else containers on a Docker host."""
    kafka = os.environ.get("CDAP_KAFKA_BOOTSTRAP")
    database = os.environ.get("CDAP_DATABASE_URL")
    if kafka and database:
        export_login(TEST)
        yield {"kafka": kafka, "database": database}
        return
    if port_open("127.0.0.1", 9092) and port_open("127.0.0.1", 5432):
        export_login(TEST)
        yield {"kafka": kafka or LOCAL_KAFKA, "database": database or LOCAL_DATABASE}
        return
    if docker_answers():
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer

        with (
            KafkaContainer("apache/kafka:4.1.0").with_kraft() as k,
            PostgresContainer("postgres:16", username="cdap", password="cdap", driver="asyncpg") as p,
        ):
            yield {"kafka": k.get_bootstrap_server(), "database": p.get_connection_url()}
        return
    pytest.fail("No Kafka/PostgreSQL: run `make up` (or set CDAP_KAFKA_BOOTSTRAP and CDAP_DATABASE_URL).")


def with_database(url: str, name: str) -> str:
    """`url` (SQLAlchemy or libpq) naming database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def make_database(stack: dict[str, str]) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Factory of throwaway databases (SQLAlchemy URLs), dropped after the test; empty, or copies of a
    `template` database."""
    created: list[str] = []
    admin_url = plain_dsn(stack["database"])

    async def make(template: str | None = None) -> str:
        name = f"cdap_test_{new_event_id().replace('-', '')[-16:]}"
        await create_database(admin_url, name, template)
        created.append(name)
        return with_database(stack["database"], name)

    yield make
    conn = await asyncpg.connect(admin_url)
    try:
        for name in created:
            await drop_database(conn, name)
    finally:
        await conn.close()


async def create_database(admin_dsn: str, name: str, template: str | None = None) -> None:
    """A database `name`, empty or a copy of database `template`, created through the server at
    `admin_dsn` (a libpq URL)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()


async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    """Drop `name` once the sessions on it are gone: ours are terminated, and a plain DROP stops the
    autovacuum worker itself. `WITH (FORCE)` would refuse: it terminates every backend on the database
    by permission, and an autovacuum worker (after a large load, vacuuming for seconds) belongs to no
    role that ours may signal."""
    for attempt in range(20):
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND usename = current_user AND pid <> pg_backend_pid()",
            name,
        )
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except asyncpg.ObjectInUseError:  # a session still closing: DROP waited 5 s for it
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
async def database_url(make_database: Callable[[], Awaitable[str]]) -> str:
    return await make_database()


@pytest.fixture
async def make_topic(stack: dict[str, str]) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Factory of fresh topics (with their `.dlq`) named after a base topic, e.g. `identity.events.t1234`;
    deleted after the test, so a long-lived local broker does not pile up partitions."""
    created: list[str] = []

    async def make(base: str = "test") -> str:
        name = f"{base}.t{new_event_id().replace('-', '')[-12:]}"
        await ensure_topics(stack["kafka"], [name, f"{name}.dlq"], partitions=3)
        created.extend([name, f"{name}.dlq"])
        return name

    yield make
    if created:
        await delete_topics(stack["kafka"], created)


def protected_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, path) of every /v1 operation of an OpenAPI document that takes a bearer token: those the
    service documents with both a 401 and a 403, which `create_app` adds to all but its `public_paths`
    (the token endpoint documents a 401 of its own, RFC 6749's invalid_client, and no 403)."""
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
        if {"401", "403"} <= operation.get("responses", {}).keys()
    ]


def librdkafka_produce(kafka: str, topic: str, codec: str, values: list[bytes], partition: int = 0) -> None:
    """Produce `values` as `codec`-compressed batches with librdkafka, a client CDAP does not control
    (confluent-kafka's own build: Debian's, 2.0.2, is refused by Kafka 4's SCRAM)."""
    from confluent_kafka import Producer  # type: ignore[import-untyped]

    options = KafkaLogin.from_env().options()
    login = (
        {
            "security.protocol": options["security_protocol"],
            "sasl.mechanism": options["sasl_mechanism"],
            "sasl.username": options["sasl_plain_username"],
            "sasl.password": options["sasl_plain_password"],
        }
        if options
        else {}
    )
    producer = Producer({"bootstrap.servers": kafka, "compression.type": codec, "linger.ms": 100, **login})
    for value in values:
        producer.produce(topic, value, partition=partition)
    if producer.flush(30) != 0:
        raise RuntimeError(f"librdkafka could not deliver every record to {topic} within 30 s")


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


async def relay_parked(database_url: str) -> bool:
    """The outbox relay of this database (the holder of its advisory lock) has made its first claim and
    waits for its next poll: idle, its last statement no longer the LISTEN it issues before claiming. A
    row committed from then on reaches Kafka at that poll, or sooner if something wakes the relay."""
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.database = a.datid"
                " AND a.datname = current_database() AND a.state = 'idle' AND a.query NOT LIKE 'LISTEN%')"
            )
        )
    finally:
        await conn.close()


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
        **extra: Any,
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
            **extra,  # e.g. department, email
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JwksServer:
    """Serves a JWKS on loopback, standing in for identity when a service runs as a real process."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ServiceProcess:
    """A CDAP service run as users run it: `uvicorn --factory <module>.app:build` in its own process."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.module = module
        self.env = {**os.environ, **env}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 30.0) -> ServiceProcess:
        import sys
        import time
        import urllib.request

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"{self.module}.app:build",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--no-proxy-headers",  # X-Forwarded-For is the app's to judge (CDAP_TRUSTED_PROXIES)
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited at start; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.module} did not answer within {wait}s; see {self.log_path}")

    def stop(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def migrate(service_dir: str, url: str) -> None:
    """Apply a service's Alembic migrations to `url` in a subprocess (sync fixtures)."""
    import sys

    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "alembic", "-c", f"{service_dir}/alembic.ini", "upgrade", "head"],
        env={**os.environ, "CDAP_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


def create_database_sync(admin_url: str) -> str:
    """A throw-away database for a sync (e.g. module-scoped) fixture; returns its SQLAlchemy URL."""

    async def create() -> str:
        name = f"cdap_test_{new_event_id().replace('-', '')[-16:]}"
        await create_database(plain_dsn(admin_url), name)
        return with_database(admin_url, name)

    return run_sync(create())


def drop_database_sync(admin_url: str, url: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(plain_dsn(admin_url))
        try:
            await drop_database(conn, urlsplit(url).path.lstrip("/"))
        finally:
            await conn.close()

    run_sync(drop())


# The in-process service fixtures, part of the plugin (apps.py uses the helpers above).
from cdap_testing.apps import InProcess as InProcess  # noqa: E402
from cdap_testing.apps import migrated_database as migrated_database  # noqa: E402
from cdap_testing.apps import migrated_templates as migrated_templates  # noqa: E402
from cdap_testing.apps import start_app as start_app  # noqa: E402
