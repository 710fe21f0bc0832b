"""Alembic wiring shared by every service: each service's `migrations/env.py` is two lines.

    from cdap_shared.migrations import run_env
    run_env(target_metadata)

The database URL comes from `CDAP_DATABASE_URL` (the service's own settings), never from alembic.ini.
Runners of one database take turns (a PostgreSQL advisory lock): a release's migration Job, a retried
pod or `make migrate` started twice never apply the same revision twice.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Any constant works; advisory locks are per database, so it only has to differ from the relay's.
MIGRATION_LOCK_KEY = 0x0CDA9_A1E0


def _do_run(connection: Connection, metadata: MetaData) -> None:
    # A session lock, held across the migrations' own transactions: the second runner waits here, then
    # reads the version table the first one committed and finds nothing left to do.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.rollback()  # a failed migration leaves its transaction aborted: unlock outside it
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()


async def _run_async(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as conn:
        await conn.run_sync(_do_run, metadata)
    await engine.dispose()


def run_env(metadata: MetaData) -> None:
    """Run the migrations online against `CDAP_DATABASE_URL` (offline mode prints SQL)."""
    url = (
        context.config.attributes.get("database_url")
        or os.environ.get("CDAP_DATABASE_URL")
        or context.config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("CDAP_DATABASE_URL is not set: export it or run `make migrate`.")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(url, metadata))


async def upgrade_to_head(folder: str, url: str, revision: str = "head") -> None:
    """Apply a service's migrations programmatically (tests, service start), up to `revision`."""
    from alembic.command import upgrade
    from alembic.config import Config

    def _upgrade() -> None:
        config = Config(os.path.join(folder, "alembic.ini"))
        config.set_main_option("script_location", os.path.join(folder, "migrations"))
        config.attributes["database_url"] = url
        upgrade(config, revision)

    await asyncio.to_thread(_upgrade)


async def at_head(folder: str, url: str) -> bool:
    """Whether the database at `url` has every migration of the service in `folder` (its Alembic heads)."""
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config(os.path.join(folder, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(folder, "migrations"))
    heads = set(ScriptDirectory.from_config(config).get_heads())
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(lambda c: set(MigrationContext.configure(c).get_current_heads()))
    finally:
        await engine.dispose()
    return current == heads


async def wait_for_head(folder: str, url: str, interval: float = 2.0) -> None:
    """Return once the release's migration Job has brought the database to this code's heads (a pod's
    init container: the new release's pods start only on the schema they were written for)."""
    while True:
        try:
            if await at_head(folder, url):
                return
        except OSError:  # the database is not reachable yet: keep waiting, as for a migration under way
            pass
        await asyncio.sleep(interval)


if __name__ == "__main__":  # `python -m cdap_shared.migrations wait FOLDER` (CDAP_DATABASE_URL)
    import sys

    if sys.argv[1:2] != ["wait"] or len(sys.argv) != 3:
        sys.exit("usage: python -m cdap_shared.migrations wait SERVICE_FOLDER")
    asyncio.run(wait_for_head(sys.argv[2], os.environ["CDAP_DATABASE_URL"]))
