"""A valid audit log of N `dossier.consulted` entries, bulk-loaded with COPY (bench/audit_scale).

Seeding 10,000,000 entries through the service would take hours (~1,100 entries/s), so the rows are
written directly, but computed with the service's own code: `EntryFacts` as `facts_from_event` builds
them for a consultation, the canonical leaf bytes of `domain.leaf_bytes`, the row of `ledger.entry_row`,
and the Merkle tiles `merkle.append_leaves` extends (the right edge's tiles carried from batch to
batch, as the ingestion does). Inclusion and consistency proofs and `cdap audit verify` therefore hold on it; bench
/audit_scale checks a sample of proofs against the signed checkpoint on every run.

Entries are spread evenly over the ten months before the load date, one monthly partition each
(`audit_partitions.entry_YYYY_MM`, as `partitions.py` names them), loaded unindexed then attached so
that PostgreSQL builds each partition's indexes once. The inbox is left empty: the service's
housekeeping keeps event ids 14 days only, and every loaded entry is older than that.

The database is kept between runs (`bench_meta` records what was loaded); `restore` cuts whatever a
run appended beyond N (entries, tiles, checkpoints, inbox rows), so every run starts at exactly N.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import cdap_testing as testing
from bench.common import ADMIN_DSN
from cdap_audit import ledger, merkle
from cdap_audit.domain import EntryFacts, leaf_bytes
from cdap_audit.partitions import SCHEMA, month_start, next_month, partition_name
from cdap_audit.tiles import TileStore
from cdap_testing import migrate

Progress = Callable[[str, float], None]
ROOT = Path(__file__).resolve().parents[1]
BATCH = 20_000
MONTHS = 10
MOTIFS = ("accompagnement_social", "instruction_aide", "verification_droits")
SECTIONS = ["adresse", "contact", "droits", "foyer", "identite", "logement", "paiements", "quotient_familial"]
ENTRY_COLUMNS = ("recorded_at", *ledger.ENTRY_COLUMNS)


def actors(count: int) -> int:
    """Distinct actors: 2,000 entries each whatever the size, so a page by actor is the same work."""
    return max(1, count // 2000)


def dossiers(count: int) -> int:
    """Distinct dossiers consulted: 10 entries each whatever the size."""
    return max(1, count // 10)


def actor_of(i: int, count: int) -> str:
    return f"user-{i % actors(count)}"


def numero_of(i: int, count: int) -> str:
    return f"{1_000_000 + (i * 7919) % dossiers(count):07d}"


def event_id(i: int, at: datetime) -> str:
    """A UUIDv7 (version and variant bits set) whose time is the entry's and random part its index."""
    ms = int(at.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (0x2 << 62) | (i & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def facts(i: int, count: int, at: datetime) -> EntryFacts:
    """What `facts_from_event` keeps of the i-th synthetic consultation (granted, or 1 in 50 denied)."""
    actor_n = i % actors(count)
    denied = i % 50 == 49
    return EntryFacts(
        event_id=event_id(i, at),
        type="dossier.consulted",
        source="/cdap/dossiers",
        time=at,
        subject=numero_of(i, count),
        actor=f"user-{actor_n}",
        organisation_id=f"org-{actor_n % 300}",
        profile="T1",
        decision="denied" if denied else "granted",
        reason="outside_caseload" if denied else None,
        motif=MOTIFS[i % 3],
        sections=() if denied else tuple(SECTIONS),
        client_ip=f"10.{actor_n % 250}.{i % 250}.1",
        trace_id=f"{i:032x}",
        refs={"grant_id": f"g-{actor_n}", "policy_version": "2026.11-1"},
    )


def months(loaded_at: datetime) -> list[datetime]:
    """The first instant of each of the MONTHS months before `loaded_at`'s month, oldest first."""
    start = month_start(loaded_at)
    out = []
    for _ in range(MONTHS):
        start = month_start(start - timedelta(days=1))
        out.append(start)
    return out[::-1]


def time_of(i: int, count: int, first_month: datetime) -> datetime:
    """Entry i's event time: each month holds count / MONTHS entries, spread evenly over it."""
    per_month = -(-count // MONTHS)
    month = first_month
    for _ in range(i // per_month):
        month = next_month(month)
    span = (next_month(month) - month).total_seconds()
    return month + timedelta(seconds=span * (i % per_month) / per_month)


def batch(
    start: int, end: int, count: int, first_month_iso: str
) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    """Entry rows and leaf hashes of [start, end) (runs in a worker process: pure, from indices only)."""
    first_month = datetime.fromisoformat(first_month_iso)
    rows, hashes = [], []
    for i in range(start, end):
        at = time_of(i, count, first_month)
        f = facts(i, count, at)
        leaf = leaf_bytes(f)
        rows.append((at + timedelta(milliseconds=40), *ledger.entry_row(i, f, leaf)))
        hashes.append(merkle.leaf_hash(leaf))
    return rows, hashes


def dsn(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def sqlalchemy_url(name: str) -> str:
    return dsn(name).replace("postgresql://", "postgresql+asyncpg://")


async def create_database(name: str, *, drop: bool) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        if drop:
            await testing.drop_database(admin, name)
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def loaded(name: str, count: int) -> bool:
    """Whether `name` holds a complete load of `count` entries (meta row written last, sizes agree)."""
    try:
        conn = await asyncpg.connect(dsn(name))
    except asyncpg.InvalidCatalogNameError:
        return False
    try:
        if not await conn.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL"):
            return False
        meta = await conn.fetchval("SELECT count FROM bench_meta WHERE complete")
        if meta != count:
            return False
        # A log kept from an earlier schema is upgraded as a deployed one would be (e.g. to tiles).
        await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), sqlalchemy_url(name))
        await restore(conn, count)
        have = await conn.fetchval("SELECT count(*) FROM entry WHERE leaf_index < $1", count)
        size = await conn.fetchval("SELECT size FROM tree_state WHERE id = 1")
        return bool(have == count and size == count)
    finally:
        await conn.close()


async def restore(conn: asyncpg.Connection, count: int) -> None:
    """Cut the log back to `count` entries: what a previous run's ingestion appended goes (and its inbox)."""
    async with conn.transaction():
        await conn.execute("DELETE FROM entry WHERE leaf_index >= $1", count)
        # Node (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level).
        # Tile (level, idx) holds the level-8*level nodes from idx * 256 on: those [0, count) completes stay.
        kept = "(($1::bigint >> (8 * level)) - idx * 256)::int"
        await conn.execute(f"DELETE FROM merkle_tile WHERE {kept} <= 0", count)
        await conn.execute(
            f"UPDATE merkle_tile SET hashes = substring(hashes FOR 32 * {kept}) "
            f"WHERE length(hashes) > 32 * {kept}",
            count,
        )
        await conn.execute("DELETE FROM checkpoint WHERE tree_size > $1", count)
        await conn.execute("DELETE FROM inbox")
        await conn.execute("DELETE FROM outbox")
        await conn.execute("DELETE FROM rule_counter")
        await conn.execute("DELETE FROM alert")
        await conn.execute("UPDATE tree_state SET size = $1 WHERE id = 1", count)


async def load(name: str, count: int, progress: Progress, *, reseed: bool = False) -> float:
    """Make `name` hold exactly `count` valid entries (reused when already there); seconds spent loading."""
    if not reseed and await loaded(name, count):
        progress(f"audit log of {count:,} entries (reused)", 1.0)
        return 0.0
    started = asyncio.get_running_loop().time()
    phase = f"loading {count:,} audit entries"
    await create_database(name, drop=True)
    await asyncio.to_thread(migrate, str(ROOT / "services" / "audit"), sqlalchemy_url(name))
    conn = await asyncpg.connect(dsn(name))
    loop = asyncio.get_running_loop()
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("CREATE TABLE bench_meta (count bigint, loaded_at timestamptz, complete boolean)")
        loaded_at = datetime.now(UTC)
        first = months(loaded_at)
        bounds = [*first, next_month(first[-1])]
        tables = [f"{SCHEMA}.{partition_name(m)}" for m in first]
        for table in tables:
            await conn.execute(f"CREATE TABLE {table} (LIKE public.entry INCLUDING DEFAULTS)")
        per_month = -(-count // MONTHS)
        size, edge = 0, TileStore()
        with ProcessPoolExecutor(max_workers=1) as pool:
            starts = list(range(0, count, BATCH))
            ahead = [
                loop.run_in_executor(pool, batch, s, min(s + BATCH, count), count, first[0].isoformat())
                for s in starts[:2]
            ]
            for k in range(len(starts)):
                rows, hashes = await ahead.pop(0)
                if k + 2 < len(starts):
                    s = starts[k + 2]
                    ahead.append(
                        loop.run_in_executor(
                            pool, batch, s, min(s + BATCH, count), count, first[0].isoformat()
                        )
                    )
                size, _ = merkle.append_leaves(edge, size, hashes)
                tiles = edge.changed_rows()
                edge = edge.edge(merkle.frontier(size))
                # Rows of one batch may straddle a month boundary (r[1] is the leaf index).
                for m, table in enumerate(tables):
                    part = [r for r in rows if m * per_month <= r[1] < (m + 1) * per_month]
                    if part:
                        await conn.copy_records_to_table(
                            table.split(".")[1], schema_name=SCHEMA, records=part, columns=ENTRY_COLUMNS
                        )
                await ledger.upsert_tiles(conn, tiles)
                progress(phase, 0.8 * size / count)
        for m, table in enumerate(tables):
            lo, hi = bounds[m].isoformat(), bounds[m + 1].isoformat()
            await conn.execute(
                f"ALTER TABLE public.entry ATTACH PARTITION {table} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            )
            progress(phase, 0.8 + 0.18 * (m + 1) / len(tables))
        await conn.execute("UPDATE tree_state SET size = $1 WHERE id = 1", count)
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("INSERT INTO bench_meta VALUES ($1, $2, true)", count, loaded_at)
        progress(phase, 1.0)
    finally:
        await conn.close()
    return asyncio.get_running_loop().time() - started
