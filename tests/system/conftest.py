"""System tests: real service processes; see harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import System


@pytest.fixture
def system(stack: dict[str, str]) -> Iterator[System]:
    running = System(admin_url=stack["database"], kafka=stack["kafka"])
    yield running
    running.stop()
