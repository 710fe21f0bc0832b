"""schemathesis against a service run as users run it: the checks every fuzz test makes, and one service
alone as a process (fresh database and topics) that trusts tokens of a minter of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdap_cli.topics import ensure_topics
from cdap_shared.envelope import new_event_id
from cdap_testing import (
    JwksServer,
    ServiceProcess,
    TokenMinter,
    create_database_sync,
    delete_topics,
    drop_database_sync,
    migrate,
    run_sync,
)
from cdap_testing.system import LOGS, SERVICES

# No 500, and every answer as the document says (status, content type, headers, body schema).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def fuzzing(max_examples: int) -> Any:
    """Hypothesis settings of the fuzz tests: derandomized, so CI sees the examples a developer saw."""
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )


@contextlib.contextmanager
def lone_service(
    name: str, stack: dict[str, str], topics: tuple[str, ...], **claims: Any
) -> Iterator[dict[str, Any]]:
    """Service `name` as a process, on a fresh database and fresh topics (`topics`: the settings that name
    them), trusting its own minter's tokens: yields its OpenAPI `schema` and a `token` with `claims`."""
    module, folder = SERVICES[name]
    minter = TokenMinter()
    jwks = JwksServer(minter.jwks)
    url = create_database_sync(stack["database"])
    run = new_event_id()[-8:]
    fresh = {setting: f"fuzz.{name}.{setting.lower()}.{run}" for setting in topics}
    names = [n for t in fresh.values() for n in (t, f"{t}.dlq")]
    try:
        migrate(str(folder), url)
        run_sync(ensure_topics(stack["kafka"], names, 1))
        service = ServiceProcess(
            module,
            {
                "CDAP_DATABASE_URL": url,
                "CDAP_KAFKA_BOOTSTRAP": stack["kafka"],
                "CDAP_JWKS_URL": jwks.url,
                "CDAP_CONSUMER_GROUP": f"fuzz-{name}-{run}",
                "CDAP_LOG_LEVEL": "WARNING",
                **fresh,
            },
            LOGS / f"fuzz-{name}-{run}.log",
        )
        try:
            service.start()
            yield {
                "schema": schemathesis.openapi.from_url(f"{service.url}/openapi.json"),
                "token": minter.mint("fuzzer", **claims),
            }
        finally:
            service.stop()
    finally:
        jwks.close()
        drop_database_sync(stack["database"], url)
        run_sync(delete_topics(stack["kafka"], names))
