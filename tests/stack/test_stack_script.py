"""`make up` is idempotent and `make down` stops everything it started (then the stack is restored)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.stack, pytest.mark.stack_lifecycle]


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stack(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "deploy/local/stack.sh"), command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


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
