"""schemathesis against the running access-requests and audit services (dossiers has its own): no 500,
answers as documented, with a caller of the right role."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdap_shared.envelope import new_event_id
from cdap_shared.testing import (
    JwksServer,
    ServiceProcess,
    TokenMinter,
    create_database_sync,
    drop_database_sync,
    migrate,
)
from cdap_shared.topics import ensure_topics

from .harness import LOGS, SERVICES

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
TOPICS = {
    "access-requests": ("CDAP_ACCESS_TOPIC", "CDAP_IDENTITY_TOPIC"),
    "audit": (
        "CDAP_IDENTITY_TOPIC",
        "CDAP_ACCESS_TOPIC",
        "CDAP_CONSULTATIONS_TOPIC",
        "CDAP_ALERTS_TOPIC",
        "CDAP_CHECKPOINTS_TOPIC",
    ),
}
ROLES = {"access-requests": ["caf_instructor"], "audit": ["auditor"]}


def running(name: str, stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    module, folder = SERVICES[name]
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    url = create_database_sync(stack["database"])
    migrate(str(folder), url)
    run = new_event_id()[-8:]
    topics = {var: f"fuzz.{name}.{var.lower()}.{run}" for var in TOPICS[name]}
    asyncio.run(ensure_topics(stack["kafka"], [*topics.values(), *(f"{t}.dlq" for t in topics.values())], 1))
    service = ServiceProcess(
        module,
        {
            "CDAP_DATABASE_URL": url,
            "CDAP_KAFKA_BOOTSTRAP": stack["kafka"],
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_CONSUMER_GROUP": f"fuzz-{name}-{run}",
            "CDAP_LOG_LEVEL": "WARNING",
            **topics,
        },
        LOGS / f"fuzz-{name}-{run}.log",
    ).start()
    token = minter.mint("fuzzer", roles=ROLES[name], department="76", email="fuzz@caf76.fr")
    try:
        yield {"schema": schemathesis.openapi.from_url(f"{service.url}/openapi.json"), "token": token}
    finally:
        service.stop()
        jwks.close()
        drop_database_sync(stack["database"], url)


@pytest.fixture(scope="module")
def access_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    yield from running("access-requests", stack)


@pytest.fixture(scope="module")
def audit_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    yield from running("audit", stack)


@pytest.fixture(scope="module")
def access_schema(access_api: dict[str, Any]) -> Any:
    return access_api["schema"]


@pytest.fixture(scope="module")
def audit_schema(audit_api: dict[str, Any]) -> Any:
    return audit_api["schema"]


access = schemathesis.pytest.from_fixture("access_schema")
audit = schemathesis.pytest.from_fixture("audit_schema")
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.stack
@access.parametrize()
@FUZZ
def test_access_requests_never_500_and_answer_as_documented(case: Any, access_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {access_api['token']}"}, checks=CHECKS)


@pytest.mark.stack
@audit.parametrize()
@FUZZ
def test_audit_never_500_and_answers_as_documented(case: Any, audit_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {audit_api['token']}"}, checks=CHECKS)
