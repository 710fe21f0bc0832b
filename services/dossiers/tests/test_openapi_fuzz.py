"""schemathesis against the running service's OpenAPI: no 500, answers match the documented schemas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
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

from cdap_shared.topics import ensure_topics
from cdap_testing import (
    JwksServer,
    ServiceProcess,
    TokenMinter,
    create_database_sync,
    drop_database_sync,
    migrate,
)

SERVICE_DIR = str(Path(__file__).resolve().parents[1])
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def dossiers_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    url = create_database_sync(stack["database"])
    migrate(SERVICE_DIR, url)
    topics = {"CDAP_CAF_TOPIC": "caf.dossiers.fuzz", "CDAP_IDENTITY_TOPIC": "identity.events.fuzz"}
    asyncio.run(ensure_topics(stack["kafka"], [*topics.values(), *(f"{t}.dlq" for t in topics.values())]))
    service = ServiceProcess(
        "cdap_dossiers",
        {
            "CDAP_DATABASE_URL": url,
            "CDAP_KAFKA_BOOTSTRAP": stack["kafka"],
            "CDAP_JWKS_URL": jwks.url,
            "CDAP_CONSUMER_GROUP": "dossiers-fuzz",
            **topics,
        },
        ARTIFACTS / "dossiers-fuzz.log",
    ).start()
    token = minter.mint("fuzzer", grants=[{"id": "g-fuzz", "profile": "T1", "department": "76"}])
    try:
        yield {"schema": schemathesis.openapi.from_url(f"{service.url}/openapi.json"), "token": token}
    finally:
        service.stop()
        jwks.close()
        drop_database_sync(stack["database"], url)


@pytest.fixture(scope="module")
def dossiers_schema(dossiers_api: dict[str, Any]) -> Any:
    return dossiers_api["schema"]


schema = schemathesis.pytest.from_fixture("dossiers_schema")


@pytest.mark.stack
@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_documented_answers(case: Any, dossiers_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {dossiers_api['token']}"}, checks=CHECKS)
