"""`cdap kafka grant`: a deployment's one-shot job (compose's `kafka-access`, Kubernetes' `cdap-kafka-access`
Job). As the admin, it gives each principal of `cdap_shared.kafka_access` its SCRAM-SHA-512 credential and
exactly its ACLs, so a deployed Kafka enforces the same matrix as the local stack. Idempotent: a credential
is replaced by the same password, an ACL that exists is left as it is."""

from __future__ import annotations

import os
from typing import Annotated

import typer

# The documented public names; the package re-exports them without an __all__, which mypy wants.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from cdap_cli import topics
from cdap_shared.kafka_access import ALL_PRINCIPALS, MECHANISM, PRINCIPALS, Principal, acls, password_variable
from cdap_shared.topics import prefix

app = typer.Typer(help="A deployed Kafka's topics, principals and ACLs.", no_args_is_help=True)
SCRAM_ITERATIONS = 8192  # Kafka's own default for SCRAM-SHA-512
RESOURCES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
OPERATIONS = {"Write": AclOperation.WRITE, "Read": AclOperation.READ}


def bindings(principals: tuple[Principal, ...] = PRINCIPALS, topic_prefix: str = "") -> list[AclBinding]:
    """`cdap_shared.kafka_access.acls()` as the admin API's ACL bindings."""
    return [
        AclBinding(
            RESOURCES[acl.resource],
            acl.name,
            ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
            f"User:{acl.principal}",
            "*",
            OPERATIONS[acl.operation],
            AclPermissionType.ALLOW,
        )
        for acl in acls(principals, topic_prefix)
    ]


def admin_client(bootstrap: str, username: str, password: str, mechanism: str = MECHANISM) -> AdminClient:
    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": username,
            "sasl.password": password,
        }
    )


def grant(
    admin: AdminClient,
    passwords: dict[str, str],
    principals: tuple[Principal, ...] = PRINCIPALS,
    topic_prefix: str = "",
) -> None:
    """Give each principal in `passwords` its SCRAM credential, then every principal its ACLs (on the
    topics and groups named with `topic_prefix`)."""
    if passwords:
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), password.encode()
            )
            for name, password in passwords.items()
        ]
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=30).values():
            future.result()
    for future in admin.create_acls(bindings(principals, topic_prefix), request_timeout=30).values():
        future.result()


def revoke(admin: AdminClient, principals: tuple[Principal, ...], topic_prefix: str = "") -> None:
    """Delete exactly the ACLs `grant` gave `principals` (a throwaway principal's, a test run's)."""
    filters = [
        AclBindingFilter(
            b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
        )
        for b in bindings(principals, topic_prefix)
    ]
    for future in admin.delete_acls(filters, request_timeout=30).values():
        future.result()


@app.command("grant")
def grant_command(
    bootstrap: Annotated[str, typer.Option(envvar="CDAP_KAFKA_BOOTSTRAP")],
    username: Annotated[str, typer.Option(envvar="CDAP_KAFKA_USERNAME", help="the admin")],
    password: Annotated[str, typer.Option(envvar="CDAP_KAFKA_PASSWORD", hidden=True)],
    mechanism: Annotated[
        str, typer.Option(envvar="CDAP_KAFKA_MECHANISM", help="the admin's SASL mechanism")
    ] = MECHANISM,
) -> None:
    """Each principal's credential (from `CDAP_KAFKA_PASSWORD_<NAME>`, e.g. `..._ACCESS_REQUESTS`; a
    principal without one is left as it is) and the ACLs of every principal."""
    passwords = {
        name: os.environ[password_variable(name)]
        for name in ALL_PRINCIPALS
        if os.environ.get(password_variable(name))
    }
    grant(admin_client(bootstrap, username, password, mechanism), passwords, topic_prefix=prefix())
    typer.echo(
        f"[kafka] {len(passwords)} credentials set, {len(bindings(topic_prefix=prefix()))} ACLs granted"
    )


@app.command("topics")
def topics_command(bootstrap: Annotated[str, typer.Option(envvar="CDAP_KAFKA_BOOTSTRAP")]) -> None:
    """Every CDAP topic and its `.dlq` (under `CDAP_TOPIC_PREFIX`), created where missing; logs in as
    `CDAP_KAFKA_USERNAME` / `CDAP_KAFKA_PASSWORD` when the broker asks for it."""
    typer.echo(topics.report(bootstrap))
