"""Two migration runners on one fresh database (a release's Job retried while the first still runs, two
pods starting at once): they take turns, so each revision is applied once and both succeed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from cdap_shared.migrations import at_head, upgrade_to_head, wait_for_head
from cdap_testing import plain_dsn

pytestmark = pytest.mark.stack

ENV_PY = """\
from sqlalchemy import MetaData

from cdap_shared.migrations import run_env

run_env(MetaData())
"""
# A slow first revision that records each time it is applied: two runners overlap while it runs.
REVISION = """\
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("CREATE TABLE applied (at timestamptz NOT NULL DEFAULT now())")
    op.execute("SELECT pg_sleep(3)")
    op.execute("INSERT INTO applied DEFAULT VALUES")
"""


def migrations_folder(root: Path) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "versions" / "0001_applied.py").write_text(REVISION)
    return root


async def test_two_concurrent_upgrades_of_a_fresh_database_apply_each_revision_once(
    make_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    url = await make_database()
    folder = migrations_folder(tmp_path)
    env = {**os.environ, "CDAP_DATABASE_URL": url}
    command = [sys.executable, "-m", "alembic", "-c", str(folder / "alembic.ini"), "upgrade", "head"]
    runners = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(asyncio.to_thread(r.communicate, timeout=120) for r in runners))
    for runner, (output, _) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, output
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM applied") == 1
        assert await conn.fetch("SELECT version_num FROM alembic_version") == [("0001",)]
    finally:
        await conn.close()


async def test_a_pod_waits_until_the_release_migrations_are_applied(
    make_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    url = await make_database()
    folder = str(migrations_folder(tmp_path))
    assert not await at_head(folder, url)
    await upgrade_to_head(folder, url)
    assert await at_head(folder, url)
    await asyncio.wait_for(wait_for_head(folder, url), timeout=60)
