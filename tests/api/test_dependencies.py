"""Every dependency of every route is a coroutine function. FastAPI runs a plain `def` dependency in a
worker thread: a thread hop per dependency per request. Identity's token endpoint, with seven of them,
fell from 1,340 to 657 tokens/s (bench/identity) when its dependencies became plain functions; none of
them blocks, so none needs a thread."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cdap_shared.services import SERVICES


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's `APIRoute`s, including those of routers FastAPI keeps as included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 includes routers lazily
            yield from api_routes(route.original_router.routes)


def sync_dependencies(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    """The dependencies under `dependant` that FastAPI would run in a worker thread."""
    for sub in dependant.dependencies:
        call = sub.call
        target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
        if call is not None and not (
            inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
        ):
            yield call
        yield from sync_dependencies(sub)


def offenders(app: FastAPI) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for route in api_routes(app.routes):
        for call in sync_dependencies(route.dependant):
            name = f"{getattr(call, '__module__', '?')}.{getattr(call, '__qualname__', repr(call))}"
            found.setdefault(name, set()).add(route.path)
    return found


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_no_route_runs_a_dependency_in_a_worker_thread(service: str) -> None:
    package = next(s.package for s in SERVICES if s.name == service)
    app = importlib.import_module(f"{package}.app").build()
    assert sum(1 for _ in api_routes(app.routes)) > 0
    assert offenders(app) == {}


def plain() -> int:
    return 1


async def coroutine() -> int:
    return 2


async def endpoint(a: Annotated[int, Depends(plain)], b: Annotated[int, Depends(coroutine)]) -> int:
    return a + b


def test_the_check_finds_a_plain_function_dependency() -> None:
    router = APIRouter()
    router.add_api_route("/x", endpoint)
    app = FastAPI()
    app.include_router(router)
    assert list(offenders(app)) == [f"{__name__}.plain"]
