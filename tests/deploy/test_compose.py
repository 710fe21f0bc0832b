"""The one-host compose file, read as `docker compose` would: it starts Kafka (KRaft), PostgreSQL, the
trace viewer and the five services, each from the project's image, in an order that can work, with its
secrets from the environment. (No Docker engine here: what only a Docker host can check is listed in
docs/deploy.md.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from cdap_shared.kafka_access import ADMIN, ALL_PRINCIPALS, MECHANISM, password_variable, service_principal
from cdap_shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
INFRASTRUCTURE = {"kafka", "postgres", "jaeger"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and `<<` merges as compose does


def test_every_service_and_its_infrastructure_is_started() -> None:
    services = compose()["services"]
    for service in SERVICES:
        assert service.name in services, service.name
        spec = services[service.name]
        assert spec["command"] == ["serve", service.name]
        assert spec["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
        assert (COMPOSE.parent / spec["build"]["context"] / spec["build"]["dockerfile"]).exists()
        assert spec["environment"]["PORT"] == str(service.port)
    assert set(services) >= INFRASTRUCTURE
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_dependencies_exist_and_setup_finishes_before_the_services_start() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        for dependency in spec.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    for service in SERVICES:
        if service.database:
            needs = services[service.name]["depends_on"]
            assert needs[f"migrate-{service.name}"]["condition"] == "service_completed_successfully"
            assert needs["topics"]["condition"] == "service_completed_successfully"
            migrate = services[f"migrate-{service.name}"]
            assert migrate["command"] == ["migrate", service.name]
            assert (
                migrate["environment"]["CDAP_DATABASE_URL"]
                == services[service.name]["environment"]["CDAP_DATABASE_URL"]
            )
            assert f"@postgres:5432/{service.database}" in migrate["environment"]["CDAP_DATABASE_URL"]


def test_spans_go_to_the_viewer_and_only_the_portal_and_the_viewer_are_published() -> None:
    services = compose()["services"]
    for service in SERVICES:
        env = services[service.name]["environment"]
        assert env["CDAP_OTLP_ENDPOINT"] == "http://jaeger:4318/v1/traces"
        assert env["CDAP_KAFKA_BOOTSTRAP"] == "kafka:9092"
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    assert set(published) == {"portal", "jaeger"}
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)


def test_every_required_secret_is_in_the_example_environment_and_none_is_in_the_file() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "CDAP_PORTAL_SECRET", "CDAP_AUDIT_SIGNING_KEY"} <= required
    example = dict(
        line.split("=", 1)
        for line in (COMPOSE.parent / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example)
    for name, spec in compose()["services"].items():
        for key, value in spec.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|SIGNING_KEY", key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the compose file"
    assert "deploy/compose/.env" in (ROOT / ".gitignore").read_text().splitlines()


COMPOSE_SCHEMA = ROOT / ".stack" / "compose-spec.json"


def compose_errors(document: dict[str, Any]) -> list[str]:
    assert COMPOSE_SCHEMA.exists(), f"{COMPOSE_SCHEMA} is missing: run `make deploy-tools`"
    validator = jsonschema_rs.validator_for(json.loads(COMPOSE_SCHEMA.read_text()))
    return [str(error) for error in validator.iter_errors(document)]


def test_the_file_is_valid_against_the_compose_specification() -> None:
    """What `docker compose config` would check first (no compose here): the Compose Specification's
    JSON schema, vendored by check-jsonschema (deploy/compose/schema.txt)."""
    assert compose_errors(compose()) == []


def test_the_schema_check_refuses_a_wrong_file() -> None:
    wrong = compose()
    wrong["services"]["kafka"]["healthchek"] = wrong["services"]["kafka"].pop("healthcheck")
    wrong["services"]["portal"]["ports"] = "127.0.0.1:8000:8000"
    errors = " ".join(compose_errors(wrong))
    assert "healthchek" in errors and "8000" in errors


def test_kafka_authenticates_every_client_and_denies_unless_an_acl_allows() -> None:
    kafka = compose()["services"]["kafka"]["environment"]
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "a listener without authentication"
    assert kafka["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == MECHANISM
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == f"User:{ADMIN}"
    assert "${CDAP_KAFKA_ADMIN_PASSWORD}" in kafka["KAFKA_LISTENER_NAME_ADMIN_PLAIN_SASL_JAAS_CONFIG"]


def variable(value: str) -> str:
    """The .env variable a `${NAME:?...}` value comes from."""
    found = re.match(r"\$\{([A-Z0-9_]+)", value)
    assert found, f"{value!r} is not taken from the environment"
    return found.group(1)


def test_each_service_logs_in_to_kafka_as_its_own_principal_granted_by_the_one_shot_job() -> None:
    services = compose()["services"]
    access = services["kafka-access"]
    assert access["command"] == ["kafka-access"] and access["restart"] == "no"
    assert access["environment"]["CDAP_KAFKA_USERNAME"] == ADMIN
    granted = {name for name in ALL_PRINCIPALS if password_variable(name) in access["environment"]}
    for service in SERVICES:
        principal = service_principal(service.name)
        env = services[service.name]["environment"]
        if principal not in ALL_PRINCIPALS:  # the portal speaks HTTP only
            assert "CDAP_KAFKA_USERNAME" not in env
            continue
        assert env["CDAP_KAFKA_USERNAME"] == principal
        # The password the job sets for the principal is the one the service logs in with.
        assert variable(env["CDAP_KAFKA_PASSWORD"]) == variable(
            access["environment"][password_variable(principal)]
        )
        assert principal in granted
    assert services["topics"]["depends_on"]["kafka-access"]["condition"] == "service_completed_successfully"
    assert services["topics"]["environment"]["CDAP_KAFKA_USERNAME"] == ADMIN
