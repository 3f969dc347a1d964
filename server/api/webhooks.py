"""Webhook endpoints as the API sets them (an agent's or a session's `webhook_url`, with a
secret shown once), and GET /sessions/{id}/webhook_deliveries."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.request import json_response, page_params, session_of, store
from server.sealing import seal
from server.webhooks import signing, urls


class Endpoint:
    """A webhook URL being set: the URL checked, and, for a new URL, its secret (shown once,
    in the answer of the request that set it) and that secret sealed (stored)."""

    def __init__(self, url: str | None, shown: str | None, sealed: str | None) -> None:
        self.url = url
        self.shown = shown
        self.sealed = sealed


async def endpoint(request: Request, url: str | None, current: str | None) -> Endpoint:
    """`url` as given (None: none); a new secret unless it is the `current` URL."""
    if url is None:
        return Endpoint(None, None, None)
    settings = request.app.state.settings
    await urls.check(url, settings.webhook_allow_private)
    if url == current:
        return Endpoint(url, None, None)
    shown, raw = signing.new_secret()
    return Endpoint(url, shown, seal(raw, request.app.state.sealing_key))


async def list_deliveries(request: Request) -> Response:
    record = await session_of(request)
    limit, cursor = page_params(request)
    return json_response(await store(request).webhooks.page(record.id, limit, cursor))


routes = [
    Route("/sessions/{session_id}/webhook_deliveries", list_deliveries, methods=["GET"]),
]
