"""The migration to `standing` keeps what an existing database knew: suspensions and ended grants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from cdap_shared.migrations import upgrade_to_head
from cdap_testing import plain_dsn

from .conftest import SERVICE_DIR

pytestmark = pytest.mark.stack


async def test_suspensions_and_ended_grants_survive_the_move_to_standing(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    await upgrade_to_head(SERVICE_DIR, url, "0001")
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO user_status (user_id, suspended) VALUES ('u-suspended', true), ('u-back', false)"
        )
        for grant_id, status in (("g-active", "active"), ("g-revoked", "revoked")):
            await conn.execute(
                "INSERT INTO grant_projection (grant_id, user_id, organisation_id, organisation_siret,"
                " profile, department, valid_from, valid_until, status) VALUES ($1, 'u-back', 'o',"
                " '73282932000074', 'T1', '76', '2026-01-01', '2026-12-31', $2)",
                grant_id,
                status,
            )
        await upgrade_to_head(SERVICE_DIR, url)
        rows = await conn.fetch("SELECT kind, subject, refusals, holder FROM standing ORDER BY kind, subject")
        assert [tuple(r) for r in rows] == [
            ("account", "u-suspended", ["suspended"], None),
            ("grant", "g-active", [], "u-back"),
            ("grant", "g-revoked", ["revoked"], "u-back"),
        ]
        assert await conn.fetchval("SELECT to_regclass('user_status')") is None
    finally:
        await conn.close()
