"""`cdap demo` and `cdap demo --scenario` as an operator runs them, against the whole running system."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from cdap_testing.system import System, wait_ready

pytestmark = pytest.mark.stack


async def cdap(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("cdap")),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_demo_seeds_then_the_scenario_passes_end_to_end(system: System, tmp_path: Path) -> None:
    await system.start("identity", "access-requests", "dossiers", "audit")
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_ready(client, *(system.url(name) for name in system.processes))
    env = {
        "CDAP_IDENTITY_URL": system.url("identity"),
        "CDAP_ACCESS_REQUESTS_URL": system.url("access-requests"),
        "CDAP_DOSSIERS_URL": system.url("dossiers"),
        "CDAP_AUDIT_URL": system.url("audit"),
        "CDAP_DATABASE_URL": system.databases["identity"],
        "CDAP_DEMO_STATE": str(tmp_path / "demo.json"),
    }
    code, out = await cdap("demo", "--count", "300", env=env)
    assert code == 0, out
    assert "Demo logins" in out and "instructeur@caf76.demo" in out
    code, out = await cdap("demo", "--scenario", env=env)
    assert code == 0, out
    assert "inclusion proof verified" in out and "scenario passed" in out
    # A second `cdap demo` does not seed again: the saved accounts still log in.
    code, out = await cdap("demo", env=env)
    assert code == 0 and "CAF de la Seine-Maritime" not in out, out
