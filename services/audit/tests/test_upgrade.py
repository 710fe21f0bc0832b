"""A database written at the first schema (0001) keeps working after the upgrade: its log still
proves, and the rule windows running at the upgrade keep counting."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from cdap_audit.config import Settings
from cdap_audit.domain import facts_from_event, leaf_bytes
from cdap_audit.ledger import ENTRY_COLUMNS, entry_row
from cdap_testing import eventually, plain_dsn

from . import rfc9162
from .conftest import SERVICE_DIR, TOPIC_SETTINGS, Audit, consulted, suspended
from .test_alerts import RULES, alerts_after
from .test_ingest import _checkpoint_at

pytestmark = pytest.mark.stack

Upgraded = Callable[[str], Awaitable[Audit]]


@pytest.fixture
async def upgraded(
    audit_factory: Callable[..., Awaitable[Audit]],
    make_topic: Callable[[str], Awaitable[str]],
    stack: dict[str, str],
    tmp_path: Path,
) -> Upgraded:
    """`await upgraded(url)`: upgrade the database at `url` to the latest schema and run the service on it."""

    async def start(url: str) -> Audit:
        await _migrate(url, "head")
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES)
        topics = {name: await make_topic(name.removesuffix("_topic")) for name in TOPIC_SETTINGS}
        settings = Settings(
            database_url=url,
            kafka_bootstrap=stack["kafka"],
            consumer_group=f"audit-{random.random()}",
            checkpoint_interval=0.2,
            alert_rules_path=rules,
            **topics,
        )
        return await audit_factory(settings=settings)

    return start


async def test_a_log_written_before_the_upgrade_still_proves(
    make_database: Callable[[], Awaitable[str]], upgraded: Upgraded
) -> None:
    """Five entries and their nodes written at 0001 (one `merkle_node` row per complete subtree, hashed
    here with the RFC's reference code); after the upgrade three more are appended, and every proof
    and the checkpoint agree with RFC 9162 over all eight leaves."""
    url = await make_database()
    await _migrate(url, "0001")
    facts = [facts_from_event(suspended(f"user-{i}")) for i in range(5)]
    old = [leaf_bytes(f) for f in facts]
    nodes = [
        (level, index, rfc9162.mth(old[index << level : (index + 1) << level]))
        for level in range(3)
        for index in range(len(old) >> level)
    ]
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = [entry_row(i, f, leaf) for i, (f, leaf) in enumerate(zip(facts, old, strict=True))]
        await conn.copy_records_to_table("entry", records=rows, columns=ENTRY_COLUMNS)
        await conn.copy_records_to_table("merkle_node", records=nodes, columns=("level", "idx", "hash"))
        await conn.execute("UPDATE tree_state SET size = 5 WHERE id = 1")
    finally:
        await conn.close()

    audit = await upgraded(url)
    await audit.publish(*(suspended(f"user-{i}") for i in range(5, 8)))
    items = await audit.wait_for_entries(8)
    leaves = [base64.b64decode(i["leaf"]) for i in items]
    assert leaves[:5] == old
    root = rfc9162.mth(leaves)
    for index in range(8):
        body = await audit.get("/v1/proofs/inclusion", index=index, tree_size=8)
        hashes = [base64.b64decode(h) for h in body["hashes"]]
        assert rfc9162.verify_inclusion(rfc9162.leaf(leaves[index]), index, 8, hashes, root), index
    body = await audit.get("/v1/proofs/consistency", first=5, second=8)
    hashes = [base64.b64decode(h) for h in body["hashes"]]
    assert rfc9162.verify_consistency(5, 8, rfc9162.mth(old), root, hashes)
    checkpoint = await eventually(lambda: _checkpoint_at(audit, 8))
    assert base64.b64decode(checkpoint["root_hash"]) == root


async def test_activity_recorded_before_the_upgrade_still_counts(
    make_database: Callable[[], Awaitable[str]], upgraded: Upgraded
) -> None:
    """Three lookups by `pia` recorded one `rule_activity` row each at 0001: after the upgrade to
    per-minute counters, a fourth lookup in the hour sets off the limit of 3."""
    start = datetime.now(UTC) - timedelta(minutes=30)  # recent: older counters are purged at start
    url = await make_database()
    await _migrate(url, "0001")
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        for minutes in (0, 5, 5):
            await conn.execute(
                "INSERT INTO rule_activity (actor, type, decision, at) "
                "VALUES ('pia', 'dossier.consulted', 'granted', $1)",
                start + timedelta(minutes=minutes),
            )
    finally:
        await conn.close()
    audit = await upgraded(url)
    raised = await alerts_after(audit, [consulted("pia", "1000060", at=start + timedelta(minutes=20))])
    [volume] = [a for a in raised if a.rule == "volume"]  # (at night in Paris, the night rule fires too)
    assert volume.actor == "pia"
    assert volume.detail.startswith("4 dossier.consulted events within 60 min")


async def _migrate(url: str, revision: str) -> None:
    from alembic.command import upgrade
    from alembic.config import Config

    config = Config(f"{SERVICE_DIR}/alembic.ini")
    config.set_main_option("script_location", f"{SERVICE_DIR}/migrations")
    config.attributes["database_url"] = url
    await asyncio.to_thread(upgrade, config, revision)
