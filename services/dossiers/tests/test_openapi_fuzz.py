"""schemathesis against the running service's OpenAPI: no 500, answers match the documented schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis

from cdap_testing.openapi import CHECKS, fuzzing, lone_service


@pytest.fixture(scope="module")
def dossiers_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    with lone_service(
        "dossiers",
        stack,
        ("CDAP_CAF_TOPIC", "CDAP_IDENTITY_TOPIC"),
        grants=[{"id": "g-fuzz", "profile": "T1", "department": "76"}],
    ) as api:
        yield api


@pytest.fixture(scope="module")
def dossiers_schema(dossiers_api: dict[str, Any]) -> Any:
    return dossiers_api["schema"]


schema = schemathesis.pytest.from_fixture("dossiers_schema")


@pytest.mark.stack
@schema.parametrize()
@fuzzing(max_examples=60)
def test_no_server_error_and_documented_answers(case: Any, dossiers_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {dossiers_api['token']}"}, checks=CHECKS)
