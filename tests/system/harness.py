"""The whole system as users run it: every service a real uvicorn process, on fresh databases, against
the local Kafka and PostgreSQL. Consumer groups are fresh and start at the end of the (long-lived)
topics, so a run never replays earlier runs' events."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cdap_shared.envelope import new_event_id
from cdap_shared.testing import MAIL_DIR, ServiceProcess, create_database_sync, free_port, mails_to, migrate

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "test-artifacts" / "system"
PASSWORD = "Systeme-CDAP-2026!"

SERVICES = {
    "identity": ("cdap_identity", ROOT / "services" / "identity"),
    "access-requests": ("cdap_access", ROOT / "services" / "access-requests"),
    "dossiers": ("cdap_dossiers", ROOT / "services" / "dossiers"),
    "audit": ("cdap_audit", ROOT / "services" / "audit"),
}


def available(name: str) -> bool:
    return (SERVICES[name][1] / "src" / SERVICES[name][0] / "app.py").exists()


@dataclass
class System:
    admin_url: str
    kafka: str
    run_id: str = field(default_factory=lambda: new_event_id()[-8:])
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self, *names: str, extra_env: dict[str, dict[str, str]] | None = None) -> System:
        """Start services (blocking work in a thread: the test's event loop keeps running)."""
        return await asyncio.to_thread(self._start, *names, extra_env=extra_env)

    def _start(self, *names: str, extra_env: dict[str, dict[str, str]] | None = None) -> System:
        for name in names:
            self.ports.setdefault(name, free_port())
        for name in names:
            module, folder = SERVICES[name]
            if name not in self.databases:
                self.databases[name] = create_database_sync(self.admin_url)
                migrate(str(folder), self.databases[name])
            env = {
                "CDAP_DATABASE_URL": self.databases[name],
                "CDAP_KAFKA_BOOTSTRAP": self.kafka,
                "CDAP_CONSUMER_GROUP": f"{name}-{self.run_id}",
                "CDAP_CONSUMER_OFFSET_RESET": "latest",
                "CDAP_LOG_LEVEL": "INFO",
                **(
                    {"CDAP_JWKS_URL": f"{self.url('identity')}/.well-known/jwks.json"}
                    if "identity" in self.ports
                    else {}
                ),
                **(extra_env or {}).get(name, {}),
            }
            self.processes[name] = ServiceProcess(
                module, env, LOGS / f"{name}-{self.run_id}.log", port=self.ports[name]
            ).start()
        return self

    async def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        await asyncio.to_thread(self.processes[name].stop, sig)
        await asyncio.to_thread(self.processes[name].start)

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


async def wait_ready(client: httpx.AsyncClient, url: str, seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            if (await client.get(f"{url}/ready")).status_code == 200:
                await asyncio.sleep(1.5)  # consumer groups settle on their partitions
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} not ready within {seconds}s")


async def activation_link_token(email: str, seconds: float = 20) -> str:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        found = mails_to(MAIL_DIR, email)
        if found:
            match = re.search(r"/activate\?token=([A-Za-z0-9_\-]+)", found[-1])
            assert match
            return match.group(1)
        await asyncio.sleep(0.2)
    raise AssertionError(f"no activation mail for {email}")


async def activate_and_login(client: httpx.AsyncClient, identity: str, email: str) -> dict[str, Any]:
    """As the person would: open the mailed link, choose a password, enrol TOTP if asked, log in."""
    token = await activation_link_token(email)
    r = await client.post(f"{identity}/v1/activations", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    secret = r.json().get("totp_secret")
    form = {"grant_type": "password", "username": email, "password": PASSWORD}
    if secret:
        form["totp"] = pyotp.TOTP(secret).now()
    login = await client.post(f"{identity}/v1/token", data=form)
    assert login.status_code == 200, login.text
    return {
        "user_id": r.json()["user_id"],
        "totp": secret,
        "headers": bearer(login.json()["access_token"]),
        "refresh": login.json().get("refresh_token"),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def bootstrap_admin(system: System, client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """`cdap identity bootstrap --json` as an operator runs it, then activation and login."""
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("cdap")),
        "identity",
        "bootstrap",
        "--email",
        email,
        "--json",
        env={**os.environ, "CDAP_DATABASE_URL": system.databases["identity"]},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    token = json.loads(out)["activation_token"]
    identity = system.url("identity")
    r = await client.post(f"{identity}/v1/activations", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text
    secret = r.json()["totp_secret"]
    login = await client.post(
        f"{identity}/v1/token",
        data={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "totp": pyotp.TOTP(secret).now(),
        },
    )
    assert login.status_code == 200, login.text
    return {"headers": bearer(login.json()["access_token"]), "totp": secret}
