"""create_app(settings): the route table, the lifespan that opens and closes everything, and
the one error renderer."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from server import providers
from server.api import (
    agents,
    anthropic_messages,
    forks,
    keys,
    messages,
    oneshot,
    responses,
    runs,
    scrape,
    search,
    sessions,
    sse,
    tokens,
    transfer,
    web,
    webhooks,
)
from server.api.auth import Gate, KeyCache
from server.api.guard import Guard
from server.api.limits import KeyLimits
from server.api.observe import NOTE, Observe
from server.api.request import json_response
from server.config import Settings
from server.errors import ApiError
from server.loop import LoopSettings
from server.metrics import PrometheusMeter
from server.providers.base import ProviderContext, ProviderSettings
from server.runs.agentspec import default_agent
from server.runs.channel import Hub
from server.runs.runner import Runner, RunnerSettings
from server.runs.sweeper import Sweeper
from server.sealing import key_file_of, sealing_key
from server.store import open_store
from server.store.lock import DatabaseLock
from server.tools.base import ToolSettings
from server.webhooks.sender import Sender, SenderSettings

log = logging.getLogger("sessiond")
_KINDS = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_body(kind: str, message: str, **extra: object) -> dict[str, object]:
    return {"type": "error", "error": {"type": kind, "message": message, **extra}}


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    extra = {k: v for k, v in exc.extra.items() if v is not None}
    return json_response(error_body(exc.type, exc.message, **extra), exc.status, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = _KINDS.get(
        exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error"
    )
    message = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return json_response(error_body(kind, message), exc.status_code, dict(exc.headers or {}))


async def client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer: the request's one log line says so, with no traceback (the
    # status is only for that line).
    request.scope[NOTE] = "client left during the request body"
    return Response(status_code=400)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(error_body("internal_error", "the server failed; see its log"), 500)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


def runner_settings(settings: Settings) -> RunnerSettings:
    return RunnerSettings(
        loop=LoopSettings(
            settings.tool_concurrency, settings.tool_timeout_s, settings.max_step_output_bytes
        ),
        tools=ToolSettings(
            command_timeout_s=settings.command_timeout_s,
            allow_run_command=settings.allow_run_command,
            allow_unsandboxed_commands=settings.allow_unsandboxed_commands,
            hidden_paths=(settings.db,),
        ),
        shutdown_grace_s=settings.shutdown_grace_s,
        run_max_s=settings.run_max_seconds,
        run_max_ceiling_s=settings.run_max_seconds_ceiling,
        log_content=settings.log_content,
        lease_timeout_s=settings.lease_timeout_s,
    )


def sender_settings(settings: Settings) -> SenderSettings:
    return SenderSettings(
        retry_max_s=settings.webhook_retry_max,
        retry_base_s=settings.webhook_retry_base,
        poll_s=settings.webhook_poll_s,
        allow_private=settings.webhook_allow_private,
    )


def by_path(routes: list[Route]) -> list[Route]:
    """One route per path, dispatching on the method, so that a 405 names every method the
    path allows (Starlette's Allow header only lists the first matching route's)."""
    handlers: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in route.methods or ():
            handlers.setdefault(route.path, {})[method] = route.endpoint
    merged = []
    for path, table in handlers.items():

        async def dispatch(request: Request, table: dict[str, Any] = table) -> Response:
            handler = table.get(request.method) or table["GET"]  # HEAD is served as GET
            response: Response = await handler(request)
            return response

        merged.append(Route(path, dispatch, methods=sorted(set(table) - {"HEAD"})))
    return merged


# Bodies other than JSON that a route takes (everything else must be application/json).
BODY_TYPES = {"/sessions/import": transfer.BODY_TYPES}


class _App(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # outside Starlette's own error middleware too: a stream's body chunks skip its wrapper
        origins = self.state.settings.cors_origins
        guarded = Guard(super().build_middleware_stack(), self.state, origins, BODY_TYPES)
        return sse.KeepSend(Observe(guarded, self.state.meter))


def create_app(settings: Settings, *, db_lock: DatabaseLock | None = None) -> Starlette:
    """`db_lock`: the database's lock if the caller holds it already (`sessiond serve` takes
    it before anything else); otherwise the lifespan takes it, before opening the database."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lock = db_lock if db_lock is not None else DatabaseLock(settings.db)
        owned = not lock.held
        lock.acquire()
        try:
            async with _serving(app):
                yield
        finally:
            if owned:
                lock.release()

    @asynccontextmanager
    async def _serving(app: Starlette) -> AsyncIterator[None]:
        meter = app.state.meter
        store = open_store(
            settings.db,
            event_flush_s=settings.event_flush_ms / 1000,
            meter=meter,
            lease_timeout_s=settings.lease_timeout_s,
        )
        await store.open()
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.provider_read_timeout_s, connect=settings.provider_connect_timeout_s
            )
        )
        hub = Hub()
        provider_settings = ProviderSettings(
            max_retries=settings.provider_max_retries,
            connect_timeout_s=settings.provider_connect_timeout_s,
            read_timeout_s=settings.provider_read_timeout_s,
            idle_timeout_s=settings.provider_idle_timeout_s,
        )
        env = dict(os.environ)
        access = providers.access_of(settings.provider_base_urls, settings.agent_key_env)
        provider_ctx = ProviderContext(http, provider_settings, env, access)
        runner = Runner(store, hub, provider_ctx, runner_settings(settings), meter)
        try:
            agent = await store.agents.ensure_default(default_agent(env, settings.default_model))
            log.info("default agent: provider %s, model %s", agent.provider, agent.model or "-")
            await runner.recover()
            app.state.store, app.state.runner = store, runner
            app.state.keys = KeyCache(store.keys, required=settings.auth == "required")
            key_file = settings.key_file or key_file_of(settings.db)
            app.state.sealing_key = seal_key = sealing_key(key_file)
            secret = await tokens.load_secret(store.secrets, seal_key)
            app.state.tokens = tokens.StreamTokens(secret, settings.stream_token_ttl)
            sender = Sender(store.webhooks, seal_key, sender_settings(settings), meter)
            sender.start()
            runner.on_run_end(sender.wake)
            sweeper = Sweeper(store, runner, settings.sweep_interval_s)
            sweeper.start()
            yield
            await sweeper.stop()
            await runner.shutdown()
            await sender.stop()
        finally:
            await http.aclose()
            await store.close()

    routes = [
        # Starlette tries routes in order: the busiest first (their paths match no other's)
        *messages.routes,
        *anthropic_messages.routes,
        Route("/healthz", healthz, methods=["GET"]),
        *scrape.routes,
        *agents.routes,
        *search.routes,  # before /sessions/{session_id}: "search" is not a session key
        *transfer.routes,
        *sessions.routes,
        *webhooks.routes,
        *forks.routes,
        *runs.routes,
        *oneshot.routes,
        *responses.routes,
        *keys.routes,
        *web.routes,
    ]
    middleware: list[Middleware] = []
    if settings.cors_origins:
        # Starlette's CORSMiddleware is plain ASGI: it leaves streaming and disconnects alone.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=[
                    "Location",
                    "Retry-After",
                    "Session-Id",
                    "Sessiond-Run-Id",
                    "Sessiond-Session-Id",
                ],
            )
        )
    middleware.append(Middleware(Gate))  # inside CORS: a page may read a 401
    app = _App(
        routes=by_path(routes),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
    )
    app.state.settings = settings
    app.state.meter = PrometheusMeter()  # one registry per app: apps in one process never share
    app.state.limits = KeyLimits(settings.rate_runs_per_min, settings.max_streams_per_key)
    app.state.draining = False  # set on SIGTERM: new requests are refused while runs finish
    return app
