"""The one-host compose file, read as `docker compose` would: it starts Kafka (KRaft), PostgreSQL, the
trace viewer and the five services, each from the project's image, in an order that can work, with its
secrets from the environment. (No Docker engine here: what only a Docker host can check is listed in
docs/deploy.md.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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
