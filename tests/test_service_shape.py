"""Every service has the same shape (docs/architecture.md, "Shape of a service"): the same files, and
Kafka handlers of one kind: `handlers.HANDLERS`, a table event type -> plain function
`(session, settings, data, at)` whose `data` is typed with the model of its event type
(`cdap_shared.events.EVENT_DATA`), dispatched by `handlers.handler(settings)`."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_identity.config import Settings as IdentitySettings
from cdap_shared import events as ev
from cdap_shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[1]
WITH_HANDLERS = [s for s in SERVICES if importlib.util.find_spec(f"{s.package}.handlers") is not None]
# What every service's package holds; the portal (no database, no Kafka) has the rules and HTTP half only.
EVERY_SERVICE = {"__init__.py", "app.py", "config.py", "domain.py", "web.py"}
WITH_A_DATABASE = EVERY_SERVICE | {"handlers.py", "models.py", "schemas.py"}


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_every_service_has_the_same_files(service: str) -> None:
    info = next(s for s in SERVICES if s.name == service)
    folder = ROOT / "services" / service / "src" / info.package
    files = {p.name for p in folder.glob("*.py")}
    assert (WITH_A_DATABASE if info.database else EVERY_SERVICE) <= files
    assert any(name.startswith("routes_") for name in files)
    # Routes are `routes_<resource>.py`, Kafka handlers `handlers.py`: none of the older names.
    assert not {
        n for n in files if n.startswith("api_") or n in {"routes.py", "consumers.py", "projections.py"}
    }


def shape_errors(module: ModuleType) -> list[str]:
    """What in `module.HANDLERS` departs from the shape: unknown types, wrong parameters or data types."""
    settings = importlib.import_module(module.__name__.rsplit(".", 1)[0] + ".config").Settings
    errors = []
    for event_type, function in module.HANDLERS.items():
        if event_type not in ev.EVENT_DATA:
            errors.append(f"{event_type}: no such event type")
            continue
        hints = typing.get_type_hints(function)
        parameters = list(inspect.signature(function).parameters)
        expected = [AsyncSession, settings, ev.EVENT_DATA[event_type], datetime]
        if not inspect.iscoroutinefunction(function) or [hints.get(p) for p in parameters] != expected:
            errors.append(f"{event_type}: {function.__name__}{inspect.signature(function)}")
    return errors


@pytest.mark.parametrize("service", [s.name for s in WITH_HANDLERS])
def test_each_row_takes_the_model_of_its_event_type(service: str) -> None:
    package = next(s.package for s in WITH_HANDLERS if s.name == service)
    module = importlib.import_module(f"{package}.handlers")
    assert module.HANDLERS
    assert shape_errors(module) == []
    assert callable(module.handler)


def test_every_service_with_a_database_has_handlers() -> None:
    assert {s.name for s in WITH_HANDLERS} == {"identity", "access-requests", "dossiers", "audit"}


def test_the_check_sees_a_row_typed_with_another_model() -> None:
    """The check above can fail: a handler whose data is another type's model is reported."""

    async def wrong(
        session: AsyncSession, settings: IdentitySettings, data: ev.GrantEnded, at: datetime
    ) -> None:
        return None

    table: dict[str, Callable[..., Any]] = {"access.request.approved": wrong, "no.such.type": wrong}
    fake = ModuleType("cdap_identity.handlers")
    fake.HANDLERS = table  # type: ignore[attr-defined]
    assert len(shape_errors(fake)) == 2
