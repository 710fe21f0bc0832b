"""Async database access: one SQLAlchemy engine per service, sessions per unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel

Row = TypeVar("Row")


async def locked(session: AsyncSession, model: type[Row], key: Any, missing: Exception) -> Row:
    """The row of `model` whose primary key is `key`, locked until the transaction ends (`SELECT ... FOR
    UPDATE`); `missing` (the domain's "unknown" error) is raised when there is none."""
    row = await session.get(model, key, with_for_update=True)
    if row is None:
        raise missing
    return row


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine; `pool_pre_ping` so a restarted PostgreSQL does not poison the pool."""
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency body: one session per request, closed afterwards."""
    async with factory() as session:
        yield session


def asyncpg_dsn(url: str) -> str:
    """The plain libpq URL asyncpg wants, from a SQLAlchemy `postgresql+asyncpg://` URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_tables(engine: AsyncEngine, metadata: MetaData | None = None) -> None:
    """Create missing tables (tests and first start before migrations exist)."""
    target = metadata if metadata is not None else SQLModel.metadata
    async with engine.begin() as conn:
        await conn.run_sync(target.create_all)


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a session from the app's `state.sessions` factory, closed after the request."""
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(request_session)]
