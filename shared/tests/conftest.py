"""Fixtures of the shared package's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from .pipeline import Pipeline, build_pipeline, close_pipeline


@pytest.fixture
async def pipeline(
    stack: dict[str, str],
    make_database: Callable[[], Awaitable[str]],
    make_topic: Callable[[str], Awaitable[str]],
) -> AsyncIterator[Pipeline]:
    p = await build_pipeline(stack, make_database, make_topic)
    yield p
    await close_pipeline(p)
