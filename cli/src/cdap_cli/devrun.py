"""`make migrate` / `make run`: apply every service's migrations, then run them all in the foreground.

Each service's output is prefixed with its name; Ctrl-C (or any service dying) stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cdap_shared.kafka_access import local_credentials, service_principal
from cdap_shared.services import SERVICES, ServiceInfo

ROOT = Path(__file__).resolve().parents[3]
# The local stack's trace viewer (Jaeger, started by `make up`) takes OTLP/HTTP here.
LOCAL_OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
COLOURS = ("36", "33", "35", "32", "34")


def folder(service: ServiceInfo) -> Path:
    return ROOT / "services" / service.name


def environment(service: ServiceInfo) -> dict[str, str]:
    """The environment `service` runs with locally: its Kafka login, its database, the trace viewer."""
    # Each service logs in to Kafka as itself (`cdap-<name>`), with the password `make up` made.
    env = {
        **local_credentials(service_principal(service.name)),
        **os.environ,
        "CDAP_SERVICE_NAME": service.name,
    }
    env.setdefault("CDAP_OTLP_ENDPOINT", LOCAL_OTLP_ENDPOINT)
    if service.database:
        env.setdefault(
            "CDAP_DATABASE_URL",
            f"postgresql+asyncpg://{service.database}:{service.database}@127.0.0.1:5432/{service.database}",
        )
    return env


def present() -> list[ServiceInfo]:
    """The services this checkout has (an issue's service appears when it is built)."""
    return [s for s in SERVICES if (folder(s) / "pyproject.toml").exists()]


def migrate() -> None:
    for service in present():
        if not (folder(service) / "alembic.ini").exists():
            continue
        print(f"[migrate] {service.name}", flush=True)
        subprocess.run(  # noqa: S603
            [sys.executable, "-m", "alembic", "-c", str(folder(service) / "alembic.ini"), "upgrade", "head"],
            check=True,
            env=environment(service),
            cwd=folder(service),
        )


def _pump(prefix: str, stream: object) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        sys.stdout.write(f"{prefix} {line}")
        sys.stdout.flush()


def run() -> None:
    services = present()
    if not services:
        sys.exit("no service is built yet: see the open issues")
    width = max(len(s.name) for s in services)
    procs: list[subprocess.Popen[str]] = []
    for i, service in enumerate(services):
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{service.package}.app:build",
            "--host",
            "127.0.0.1",
        ]
        proc = subprocess.Popen(  # noqa: S603
            # X-Forwarded-For is the app's to judge (CDAP_TRUSTED_PROXIES), never uvicorn's
            [*cmd, "--port", str(service.port), "--no-access-log", "--no-proxy-headers"],
            env=environment(service),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        prefix = f"\033[{COLOURS[i % len(COLOURS)]}m{service.name:<{width}} |\033[0m"
        threading.Thread(target=_pump, args=(prefix, proc.stdout), daemon=True).start()
        procs.append(proc)
        print(f"{prefix} http://127.0.0.1:{service.port}/docs", flush=True)
    threading.Thread(target=_seed_when_ready, args=(services,), daemon=True).start()
    try:
        while all(p.poll() is None for p in procs):
            threading.Event().wait(0.5)
        print("a service stopped; stopping the others", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _seed_when_ready(services: list[ServiceInfo]) -> None:
    """Once every service is ready, load the demo data (once) and print the URLs and demo logins."""
    import time
    import urllib.request

    deadline = time.monotonic() + 120
    pending = list(services)
    while pending and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{pending[0].port}/ready", timeout=2) as r:
                if r.status == 200:
                    pending.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.5)
    if pending:
        names = ", ".join(s.name for s in pending)
        print(f"not ready after 2 minutes: {names}; no demo data loaded", flush=True)
        return
    cdap = Path(sys.executable).with_name("cdap")
    if cdap.exists():
        subprocess.run([str(cdap), "demo"], check=False)  # noqa: S603


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["migrate", "run"])
    args = parser.parse_args()
    migrate() if args.command == "migrate" else run()


if __name__ == "__main__":
    main()
