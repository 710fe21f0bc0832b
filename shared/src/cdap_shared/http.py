"""The FastAPI application factory every service uses: problem+json, /health, /ready, /metrics, tracing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdap_shared.problems import Problem, install_problem_handlers

ReadyCheck = Callable[[], Awaitable[None]]


def create_app(
    *,
    title: str,
    version: str = "0.1.0",
    lifespan: Any = None,
    routers: Sequence[APIRouter] = (),
    ready_checks: dict[str, ReadyCheck] | None = None,
) -> FastAPI:
    """Build a service's app; `ready_checks` maps a dependency name to a coroutine that raises if down."""
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    install_problem_handlers(app)
    checks = ready_checks or {}

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "A dependency is unreachable"}})
    async def ready() -> dict[str, Any]:
        """Readiness: every dependency (database, Kafka) answers."""
        failed = {}
        for name, check in checks.items():
            try:
                await check()
            except Exception as exc:
                failed[name] = type(exc).__name__
        if failed:
            raise Problem(503, "Not ready", "A dependency is unreachable.", failed=failed)
        return {"status": "ready", "checks": sorted(checks)}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready,metrics")
    return app
