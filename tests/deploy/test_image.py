"""The image recipe and the Grafana dashboard, read as their tools would (no Docker engine here)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from cdap_shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "docker" / "cdap.sh"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "cdap.json"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_installs_from_the_lock_and_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    steps = instructions()
    runs = [args for op, args in steps if op == "RUN"]
    assert any("uv sync --locked --no-dev" in r for r in runs), "dependencies must come from uv.lock"
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    (healthcheck,) = [args for op, args in final if op == "HEALTHCHECK"]
    assert "/health" in healthcheck
    copied = " ".join(args for op, args in steps if op == "COPY")
    assert "uv.lock" in copied and "tests" not in copied


def test_the_entrypoint_knows_every_service_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    # The image puts its environment's python first on the PATH, as this does.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = ENTRYPOINT.read_text()
    assert 'python -m cdap_shared.services package "$1"' in script
    for service in SERVICES:  # known: `migrate` goes on to look for its Alembic folder (none here)
        known = subprocess.run(
            ["sh", str(ENTRYPOINT), "migrate", service.name],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert known.returncode == 0 and known.stdout.strip() == f"{service.name} has no database", known
    for command in ("serve", "migrate", "wait-migrated"):
        done = subprocess.run(
            ["sh", str(ENTRYPOINT), command, "billing"], capture_output=True, text=True, timeout=30, env=env
        )
        assert done.returncode == 64 and "unknown service 'billing'" in done.stderr
    # The release's jobs: Kafka's principals (cdap kafka grant), the topics.
    assert "kafka-access)\n    exec cdap kafka grant" in script and "topics)" in script
    for ignored in ("tests", ".venv", ".stack", "bench"):
        assert ignored in (ROOT / ".dockerignore").read_text().splitlines()


def test_the_dashboard_reads_only_metrics_the_services_expose() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for module in ("cdap_shared.http", "cdap_shared.relay", "cdap_shared.watch", "cdap_audit.scheduler"):
        importlib.import_module(module)
    suffixes = ("", "_total", "_bucket", "_count", "_sum")  # a labelled family has no sample until used
    exposed = {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b(cdap_[a-z_]+)", e)}
    assert {
        "cdap_http_request_duration_seconds_bucket",
        "cdap_outbox_backlog",
        "cdap_consumer_lag",
        "cdap_consumer_seconds_since_progress",
        "cdap_events_dead_lettered_total",
        "cdap_audit_checkpoint_tree_size",
    } <= used
    missing = used - exposed
    assert not missing, f"the dashboard reads metrics nothing exposes: {sorted(missing)}"
    routes = [e for e in exprs if "cdap_http_request_duration_seconds" in e]
    assert routes and all("route" in e and "service" in e for e in routes)
