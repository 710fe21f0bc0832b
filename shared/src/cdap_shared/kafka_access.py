"""Who may do what on the broker, and how a Kafka client proves who it is.

The broker authenticates every connection with SASL/SCRAM-SHA-512 and authorises every request with
Kafka ACLs, deny by default. Each service has its own principal (`cdap-<service name>`): it may write the
topics it owns and the dead-letter topics of those it consumes, read only the topics it consumes, and
join only consumer groups named after it. The CAF feed may write only `caf.dossiers`. `cdap-admin` (the
brokers themselves and the stack's tooling) and `cdap-test` (test fixtures and benchmarks, which create
their own topics and groups) are super users. `python -m cdap_shared.kafka_access acls` prints the ACLs
for `deploy/local/stack.sh`; the local stack keeps each principal's password in
`.stack/kafka/credentials/<principal>` (mode 600).
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from faststream.security import SASLScram512

from cdap_shared.events import dlq_for

MECHANISM = "SCRAM-SHA-512"
ADMIN = "cdap-admin"
TEST = "cdap-test"
CAF_FEED = "cdap-caf-feed"
SUPER_USERS = (ADMIN, TEST)
ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Principal:
    """One client identity and what the broker lets it do."""

    name: str
    owns: tuple[str, ...]  # topics it publishes
    consumes: tuple[str, ...] = ()
    group: str | None = None  # consumer groups whose name starts with this

    @property
    def writes(self) -> tuple[str, ...]:
        """Its own topics, and the `.dlq` of each topic it consumes (where its poison events go)."""
        return self.owns + tuple(dlq_for(t) for t in self.consumes)


PRINCIPALS = (
    Principal("cdap-identity", ("identity.events",), ("access.events", "audit.alerts"), "identity"),
    Principal("cdap-access-requests", ("access.events",), ("identity.events",), "access-requests"),
    Principal("cdap-dossiers", ("dossier.consultations",), ("caf.dossiers", "identity.events"), "dossiers"),
    Principal(
        "cdap-audit",
        ("audit.alerts", "audit.checkpoints"),
        ("identity.events", "access.events", "dossier.consultations", "audit.alerts"),
        "audit",
    ),
    Principal(CAF_FEED, ("caf.dossiers",)),
)
ALL_PRINCIPALS = (*SUPER_USERS, *(p.name for p in PRINCIPALS))


def service_principal(service_name: str) -> str:
    """The principal a service (`identity`, `access-requests`, ...) connects as."""
    return f"cdap-{service_name}"


@dataclass(frozen=True)
class KafkaLogin:
    """The SASL/SCRAM credentials a Kafka client connects with; none when `username` is unset (a broker
    without authentication, e.g. a testcontainer)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> KafkaLogin:
        """From `CDAP_KAFKA_USERNAME` / `CDAP_KAFKA_PASSWORD` (tools, tests, benchmarks)."""
        return cls(os.environ.get("CDAP_KAFKA_USERNAME"), os.environ.get("CDAP_KAFKA_PASSWORD"))

    def options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        if not self.username:
            return {}
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password or "",
        }

    def security(self) -> SASLScram512 | None:
        """The same, for a FastStream `KafkaBroker(security=...)`."""
        return SASLScram512(self.username, self.password or "") if self.username else None


def stack_dir() -> Path:
    return Path(os.environ.get("CDAP_STACK_DIR") or ROOT / ".stack")


def local_credentials(principal: str) -> dict[str, str]:
    """`CDAP_KAFKA_USERNAME` / `CDAP_KAFKA_PASSWORD` for `principal` from the local stack's credential
    store, or nothing when the stack made none (then the broker asks for none)."""
    path = stack_dir() / "kafka" / "credentials" / principal
    if not path.is_file():
        return {}
    return {"CDAP_KAFKA_USERNAME": principal, "CDAP_KAFKA_PASSWORD": path.read_text().strip()}


def log_in_as(principal: str) -> KafkaLogin:
    """The credentials in `CDAP_KAFKA_USERNAME` / `CDAP_KAFKA_PASSWORD` when set, else `principal`'s
    from the local stack's store (none when the stack made none)."""
    if os.environ.get("CDAP_KAFKA_USERNAME"):
        return KafkaLogin.from_env()
    env = local_credentials(principal)
    return KafkaLogin(env.get("CDAP_KAFKA_USERNAME"), env.get("CDAP_KAFKA_PASSWORD"))


def export_login(principal: str) -> None:
    """Unless `CDAP_KAFKA_USERNAME` is set, put `principal`'s local credentials in the environment, so
    that every client of this process and of the processes it starts logs in as `principal`."""
    if not os.environ.get("CDAP_KAFKA_USERNAME"):
        os.environ.update(local_credentials(principal))


@dataclass(frozen=True)
class Acl:
    """One ALLOW entry: `principal` may `operation` (Write, Read) the `resource` (topic, group) `name`;
    a prefixed one covers every name starting with it."""

    principal: str
    operation: str
    resource: str
    name: str
    prefixed: bool = False


def acls(principals: tuple[Principal, ...] = PRINCIPALS, topic_prefix: str = "") -> list[Acl]:
    """What `principals` say, as ACL entries, nothing more (the local stack and a deployment's
    `cdap kafka grant` both grant exactly these). Topics are literal names; a group is a prefix, so a
    system test's fresh group `dossiers-1a2b` belongs to dossiers too. Write and Read imply Describe.
    `topic_prefix` (`CDAP_TOPIC_PREFIX`) goes in front of every topic and group: the names of a system
    that runs with that prefix, such as a test run's."""
    entries = []
    for p in principals:
        entries += [Acl(p.name, "Write", "topic", topic_prefix + t) for t in p.writes]
        entries += [Acl(p.name, "Read", "topic", topic_prefix + t) for t in p.consumes]
        if p.group:
            entries.append(Acl(p.name, "Read", "group", topic_prefix + p.group, prefixed=True))
    return entries


def acl_commands() -> list[list[str]]:
    """`kafka-acls --add` arguments granting `acls()`, one command per principal, operation and kind."""
    commands = []
    for (principal, operation, resource, prefixed), same in groupby(
        acls(), key=lambda a: (a.principal, a.operation, a.resource, a.prefixed)
    ):
        command = ["--allow-principal", f"User:{principal}", "--operation", operation]
        command += _each(f"--{resource}", tuple(a.name for a in same))
        if prefixed:
            command += ["--resource-pattern-type", "prefixed"]
        commands.append(command)
    return commands


def password_variable(principal: str) -> str:
    """Where a deployment's one-shot grant job finds `principal`'s password: `cdap-access-requests` in
    `CDAP_KAFKA_PASSWORD_ACCESS_REQUESTS`."""
    return "CDAP_KAFKA_PASSWORD_" + principal.removeprefix("cdap-").upper().replace("-", "_")


def _each(flag: str, values: tuple[str, ...]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]


async def cannot_log_in(bootstrap: str, patience: float = 90.0) -> list[str]:
    """The principals of the local credential store that the broker refuses (it does not know them, or
    knows another password). A broker that does not answer yet (still starting) is asked again for up to
    `patience` seconds; after that, `TimeoutError`: a refusal is never guessed from silence."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError, SaslAuthenticationFailed

    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    deadline = asyncio.get_running_loop().time() + patience
    refused = []
    for name in ALL_PRINCIPALS:
        env = local_credentials(name)
        login = KafkaLogin(env.get("CDAP_KAFKA_USERNAME"), env.get("CDAP_KAFKA_PASSWORD"))
        while True:
            try:
                conn = await create_conn(host, int(port), request_timeout_ms=10_000, **login.options())
            except SaslAuthenticationFailed:
                refused.append(name)
                break
            except (OSError, KafkaError) as e:  # TimeoutError is an OSError
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"Kafka at {bootstrap} did not answer {name}'s login: {e}") from e
                await asyncio.sleep(1)
            else:
                conn.close()
                break
    return refused


def main() -> None:
    """For deploy/local/stack.sh: `acls` prints one `kafka-acls` argument line per command, `shell` the
    principals as shell variables, `unknown BOOTSTRAP` the principals the broker refuses."""
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "acls":
        for command in acl_commands():
            print(" ".join(command))
    elif what == "shell":
        print(f"kafka_admin={ADMIN}")
        print(f"kafka_super_users='{';'.join(f'User:{name}' for name in SUPER_USERS)}'")
        print(f"kafka_principals=({' '.join(ALL_PRINCIPALS)})")
    elif what == "unknown" and len(sys.argv) == 3:
        try:
            print(" ".join(asyncio.run(cannot_log_in(sys.argv[2]))))
        except TimeoutError as e:
            sys.exit(str(e))
    else:
        sys.exit("usage: python -m cdap_shared.kafka_access acls|shell|unknown BOOTSTRAP")


if __name__ == "__main__":
    main()
