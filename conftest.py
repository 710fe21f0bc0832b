"""Run-wide pytest hooks: tests that stop and start the local stack go last."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("stack_lifecycle") is not None)
