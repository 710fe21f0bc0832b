"""The FastAPI application factory every service uses: problem+json, /health, /ready, /metrics, tracing."""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.propagators.textmap import TextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cdap_shared.bodylimit import BodyLimitMiddleware
from cdap_shared.problems import Problem, install_problem_handlers

ReadyCheck = Callable[[], Awaitable[None]]

REQUEST_DURATION = Histogram(
    "cdap_http_request_duration_seconds",
    "HTTP request duration, by route template (never the raw path: one series per route, not per id)",
    ["method", "route", "status"],
)
UNMATCHED = "unmatched"  # 404s on made-up paths share one series


class RouteMetrics:
    """Pure ASGI middleware timing each request into `REQUEST_DURATION` (cheaper than BaseHTTPMiddleware
    on the lookup's hot path). The router writes the matched route into the scope, read once answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUEST_DURATION.labels(scope["method"], route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def route_template(scope: MutableMapping[str, Any]) -> str:
    """`/v1/dossiers/{numero}` for a request to `/v1/dossiers/1234567`."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


HotHandler = Callable[[Request, Any], Awaitable[Response]]
HOT_ACCEPTED = "cdap.hot_accepted"  # the scope key holding what a hot route's `accepts` returned


@dataclass(frozen=True)
class HotRoute:
    """A route a request may take without the middleware stack: `accepts` reads the request (its path
    parameters set) and returns what the route's handler needs, or None to leave the request to the
    stack. `path` is the route's full template, as `REQUEST_DURATION` and the span name give it; `app`
    the handler with what the stack would have given it."""

    method: str
    path: str
    regex: re.Pattern[str]
    accepts: Callable[[Request], Any]
    app: ASGIApp


class ServiceApp(FastAPI):
    """FastAPI with hot routes: a request a hot route accepts skips the middleware stack, routing and
    dependency solving (most of a lookup's CPU), and gets only what the stack would have given it: the
    client address from a trusted proxy, its `REQUEST_DURATION`, its server span (same name, parent and
    sampling as the instrumentor's) and the app's exception handlers. Every other request, a malformed
    one included, takes the stack, so its 401/403/422 and the OpenAPI document stay FastAPI's."""

    hot: tuple[HotRoute, ...] = ()
    trusted_proxies: tuple[str, ...] = ()

    def add_hot_route(
        self,
        method: str,
        path: str,
        accepts: Callable[[Request], Any],
        handler: HotHandler,
    ) -> None:
        """Serve `method path` (a route also declared the usual way, so in the OpenAPI document) through
        `handler(request, accepted)` whenever `accepts` returns something for the request."""
        regex, _, _ = compile_path(path)
        app: Any = RouteMetrics(self._traced(method, path, handler))
        if self.trusted_proxies:  # after `create_app`, which sets them
            app = ProxyHeadersMiddleware(app, trusted_hosts=list(self.trusted_proxies))
        self.hot = (*self.hot, HotRoute(method, path, regex, accepts, app))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for hot in self.hot:
                match = hot.regex.match(scope["path"])
                if match is None or scope["method"] != hot.method:
                    continue
                scope["app"], scope["path_params"] = self, match.groupdict()
                accepted = hot.accepts(Request(scope, receive))
                if accepted is not None:
                    scope["route"], scope[HOT_ACCEPTED] = hot, accepted
                    await hot.app(scope, receive, send)
                    return
                break
        await super().__call__(scope, receive, send)

    def _traced(self, method: str, path: str, handler: HotHandler) -> ASGIApp:
        name, attributes = f"{method} {path}", {"http.method": method, "http.route": path}

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive)
            parent = _propagated(scope)
            with _TRACER.start_as_current_span(
                name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
            ) as span:
                try:
                    response = await handler(request, scope[HOT_ACCEPTED])
                except Exception as exc:
                    handlers = self.exception_handlers
                    on_error = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
                    if on_error is None:
                        raise
                    answer = on_error(request, exc)
                    response = await answer if inspect.isawaitable(answer) else answer
                    if on_error is handlers.get(Exception):  # unexpected: Starlette's server error path
                        await response(scope, receive, send)
                        raise
                span.set_attribute("http.status_code", response.status_code)
                await response(scope, receive, send)

        return app


_TRACER = trace.get_tracer(__name__)


def _propagated(scope: Scope) -> Context:
    """The caller's trace context, when its headers carry one (else none: a new trace); most calls carry
    none, and extracting nothing costs as much as the span itself."""
    fields = _header_names(propagate.get_global_textmap())
    if any(name in fields for name, _ in scope["headers"]):
        return propagate.extract(Headers(scope=scope))
    return Context()


@functools.cache
def _header_names(propagator: TextMapPropagator) -> frozenset[bytes]:
    return frozenset(name.encode() for name in propagator.fields)


class NotReady(Exception):
    """A readiness failure whose text is safe to show (it names a consumer, never a credential)."""


TOKEN_PATH = "/v1/token"  # identity's token endpoint, relative to identity itself


def create_app(
    *,
    title: str,
    version: str = "0.1.0",
    lifespan: Any = None,
    routers: Sequence[APIRouter] = (),
    ready_checks: dict[str, ReadyCheck] | None = None,
    public_paths: Sequence[str] = (),
    trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
    token_url: str = TOKEN_PATH,
) -> ServiceApp:
    """Build a service's app; `ready_checks` maps a dependency name to a coroutine that raises if down;
    `public_paths` are the /v1 paths that need no bearer token (documented without 401/403, and with no
    security); `token_url` is identity's token endpoint, where the bearer tokens come from;
    `trusted_proxies` are the networks whose X-Forwarded-For names the client (the settings')."""
    app = ServiceApp(
        title=title, version=version, lifespan=lifespan, generate_unique_id_function=operation_id
    )
    app.trusted_proxies = tuple(str(n) for n in trusted_proxies)
    if trusted_proxies:  # uvicorn runs with --no-proxy-headers: this is the one place XFF is read
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=[str(n) for n in trusted_proxies])
    # Bodies are limited before anything reads them (the route's `max_body`, else 64 KiB).
    app.add_middleware(BodyLimitMiddleware, openapi=lambda: app.openapi())
    install_problem_handlers(app)
    checks = ready_checks or {}

    @app.get("/health", tags=["ops"], responses={200: example_response({"status": "ok"})})
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["ops"],
        responses={
            200: example_response({"status": "ready", "checks": ["database", "kafka"]}),
            503: {"description": "A dependency is unreachable, or a consumer is stalled"},
        },
    )
    async def ready() -> dict[str, Any]:
        """Readiness: every dependency (database, Kafka) answers and every consumer progresses."""
        failed = {}
        for name, check in checks.items():
            try:
                await check()
            except NotReady as exc:
                failed[name] = str(exc)
            except Exception as exc:
                failed[name] = type(exc).__name__
        if failed:
            detail = "; ".join(f"{name}: {why}" for name, why in failed.items())
            raise Problem(503, "Not ready", detail, failed=failed)
        return {"status": "ready", "checks": sorted(checks)}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    app.add_middleware(RouteMetrics)
    # No spans for the ASGI `receive`/`send` events: two more spans per request that say nothing the
    # request's own span does not (a tenth of a lookup's CPU on the profile).
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="health,ready,metrics", exclude_spans=["receive", "send"]
    )
    _document_problems(app, public_paths)
    _document_security(app, public_paths, token_url)
    return app


def operation_id(route: APIRoute) -> str:
    """`<first tag>_<function name>` (`accounts_suspend_user`): stable while the handler keeps its name,
    unlike FastAPI's default, which spells the path and the method out."""
    tag = re.sub(r"\W+", "_", str(route.tags[0]).lower()) if route.tags else ""
    return f"{tag}_{route.name}" if tag else route.name


# Bearer tokens are EdDSA JWTs from identity's token endpoint: people by the password grant (TOTP in the
# form when enrolled), partner systems by client credentials.
def oauth2_scheme(token_url: str) -> dict[str, Any]:
    """The OAuth2 security scheme of the APIs, both flows at `token_url`."""
    return {
        "type": "oauth2",
        "description": "Bearer access token (EdDSA JWT, 5 minutes) from identity's `POST /v1/token`.",
        "flows": {
            "password": {"tokenUrl": token_url, "scopes": {}},
            "clientCredentials": {"tokenUrl": token_url, "scopes": {}},
        },
    }


def _document_security(app: FastAPI, public_paths: Sequence[str], token_url: str) -> None:
    """Give every operation an explicit `security`: a bearer token from identity for the /v1 operations
    not in `public_paths`, what a FastAPI security dependency already declared (the portal's session
    cookie), and none (`[]`) for the rest."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        for path, path_item in schema.get("paths", {}).items():
            for operation in path_item.values():
                if "security" in operation:
                    continue
                if path.startswith("/v1/") and path not in public_paths:
                    schemes["oauth2"] = oauth2_scheme(token_url)
                    operation["security"] = [{"oauth2": []}]
                else:
                    operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def example_response(body: Any) -> dict[str, Any]:
    """An operation's `responses` entry giving its JSON body an example (FastAPI keeps the schema)."""
    return {"content": {"application/json": {"example": body}}}


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "reason": {"type": "string", "description": "machine-readable cause, e.g. outside_caseload"},
    },
    "additionalProperties": True,
    "examples": [
        {
            "type": "about:blank",
            "title": "Forbidden",
            "status": 403,
            "detail": "this dossier is outside your caseload",
            "reason": "outside_caseload",
        }
    ],
}


def _document_problems(app: FastAPI, public_paths: Sequence[str]) -> None:
    """Make the OpenAPI document say what the handlers do: every 4xx/5xx is application/problem+json."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, path_item in schema.get("paths", {}).items():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                for code, response in responses.items():
                    content = response.get("content", {})
                    is_error = code[0] in "45"
                    default_422 = code == "422" and "HTTPValidationError" in str(content)
                    if is_error and (not content or default_422):
                        response["content"] = problem
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "Malformed body", "content": problem})
                    responses.setdefault("413", {"description": "Body too large", "content": problem})
                if "{" in path:  # a path naming a resource answers 404 when there is none
                    responses.setdefault("404", {"description": "Not found", "content": problem})
                if path.startswith("/v1/") and path not in public_paths:
                    responses.setdefault(
                        "401", {"description": "Missing or invalid token", "content": problem}
                    )
                    responses.setdefault("403", {"description": "Not allowed", "content": problem})
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def current_time() -> datetime:
    """Dependency: the current instant (UTC). Tests travel in time with
    `app.dependency_overrides[current_time]`. Here, at the HTTP edge, so that `cdap_shared.clock`, which
    domain modules read, stays free of FastAPI."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(current_time)]
