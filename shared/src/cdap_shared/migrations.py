"""Alembic wiring shared by every service: each service's `migrations/env.py` is two lines.

    from cdap_shared.migrations import run_env
    run_env(target_metadata)

The database URL comes from `CDAP_DATABASE_URL` (the service's own settings), never from alembic.ini.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _do_run(connection: Connection, metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


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
