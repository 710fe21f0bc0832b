"""System tests: real service processes; see cdap_testing.system."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cdap_testing.system import CLIENT_LIMITS, System


@pytest.fixture
def system(stack: dict[str, str]) -> Iterator[System]:
    running = System(admin_url=stack["database"], kafka=stack["kafka"])
    yield running
    running.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as c:
        yield c
