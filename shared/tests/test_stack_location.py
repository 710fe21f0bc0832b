"""Where the tests find Kafka and PostgreSQL: the Docker path (testcontainers) is taken on a Docker host.

No Docker engine exists on the CI machines, so the engine check and the containers are faked here; the
test proves the fixture starts both containers and hands their addresses to the tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import testcontainers.community.kafka
import testcontainers.community.postgres

import cdap_testing as testing

started: list[str] = []


class FakeContainer:
    def __init__(self, image: str, **options: Any) -> None:
        self.image, self.options = image, options

    def with_kraft(self) -> FakeContainer:
        self.options["kraft"] = True
        return self

    def __enter__(self) -> FakeContainer:
        started.append(self.image)
        return self

    def __exit__(self, *_: object) -> None:
        started.remove(self.image)

    def get_bootstrap_server(self) -> str:
        assert self.options["kraft"], "Kafka must run in KRaft mode, as the local stack does"
        return "10.0.0.1:9093"

    def get_connection_url(self) -> str:
        return f"postgresql+{self.options['driver']}://{self.options['username']}:x@10.0.0.2:5432/test"


def test_a_docker_host_gets_kafka_and_postgresql_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDAP_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("CDAP_DATABASE_URL", raising=False)
    monkeypatch.setattr(testing, "port_open", lambda host, port: False)
    monkeypatch.setattr(testing, "docker_answers", lambda: True)
    monkeypatch.setattr(testcontainers.community.kafka, "KafkaContainer", FakeContainer)
    monkeypatch.setattr(testcontainers.community.postgres, "PostgresContainer", FakeContainer)

    with testing.locate_stack() as found:
        assert found == {
            "kafka": "10.0.0.1:9093",
            "database": "postgresql+asyncpg://cdap:x@10.0.0.2:5432/test",
        }
        assert sorted(started) == ["apache/kafka:4.1.0", "postgres:16"]
    assert started == []  # both stopped after the run


def test_without_stack_or_docker_the_run_fails_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDAP_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setattr(testing, "port_open", lambda host, port: False)
    monkeypatch.setattr(testing, "docker_answers", lambda: False)
    with pytest.raises(pytest.fail.Exception, match="make up"), testing.locate_stack():
        pass
