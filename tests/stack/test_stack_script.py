"""`make up` is idempotent, `make down` stops everything it started (then the stack is restored), and
`make up` gives back a SCRAM credential the broker's metadata lacks."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

from cdap_cli.kafka_grant import admin_client
from cdap_shared.kafka_access import ADMIN, TEST

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.stack, pytest.mark.stack_lifecycle]


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stack(command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "deploy/local/stack.sh"), command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def free_port_pair() -> int:
    """A port whose next one is free too (a Kafka node listens on both: clients, controllers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535 and not answers(port + 1):
            return port
    raise AssertionError("no two free consecutive ports")


def test_up_gives_back_a_scram_credential_the_broker_lost(tmp_path: Path) -> None:
    # A second Kafka beside the stack (its own folder and ports, the stack's jars), left alone by the rest.
    port = free_port_pair()
    env = {
        "CDAP_STACK_DIR": str(tmp_path),
        "CDAP_KAFKA_PORT": str(port),
        "CDAP_KAFKA_LIBS": str(ROOT / ".stack/kafka/libs"),
    }
    started = stack("kafka-up", env)
    try:
        assert started.returncode == 0, started.stderr
        test_password = (tmp_path / "kafka/credentials" / TEST).read_text().strip()
        admin = admin_client(f"127.0.0.1:{port}", TEST, test_password)
        deletion = UserScramCredentialDeletion(ADMIN, ScramMechanism.SCRAM_SHA_512)
        for future in admin.alter_user_scram_credentials([deletion], request_timeout=30).values():
            future.result()

        def refused() -> str:
            ask = ["-m", "cdap_shared.kafka_access", "unknown", f"127.0.0.1:{port}"]
            out = subprocess.run(
                [str(ROOT / ".venv/bin/python"), *ask],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, **env},
                check=True,
            )
            return out.stdout.strip()

        assert refused() == ADMIN
        again = stack("kafka-up", env)
        assert again.returncode == 0, again.stderr
        assert f"giving {ADMIN} its SCRAM credential" in again.stdout
        assert refused() == ""
        assert ADMIN in (tmp_path / "kafka/logs/credentials.log").read_text()
    finally:
        stack("kafka-down", env)


def test_up_twice_is_harmless_and_down_stops_what_up_started() -> None:
    first, second = stack("up"), stack("up")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "Kafka already answers" in second.stdout
    assert all(answers(p) for p in (5432, 9092, 1025, 16686, 4318))
    started_postgres = (ROOT / ".stack/pg.started-by-stack").exists()
    pid_file = ROOT / ".stack/kafka/kafka.pid"
    # Another checkout's stack may already be serving the ports: then this one started nothing,
    # and `down` must leave that stack alone.
    kafka_pid = int(pid_file.read_text()) if pid_file.exists() else None
    started_sink = (ROOT / ".stack/mailsink.pid").exists()
    started_viewer = (ROOT / ".stack/jaeger/jaeger.pid").exists()

    try:
        down = stack("down")
        assert down.returncode == 0, down.stderr
        if kafka_pid is not None:
            assert not answers(9092)
            assert not Path(f"/proc/{kafka_pid}").exists()
            assert "Kafka: down" in stack("status").stdout
        else:
            assert answers(9092)
        if started_sink:
            assert not answers(1025)
        if started_viewer:
            assert not answers(16686)
        if started_postgres:
            assert not answers(5432)
    finally:
        restored = stack("up")
        assert restored.returncode == 0, restored.stderr
    assert all(answers(p) for p in (5432, 9092, 1025, 16686))
