"""The guard at the HTTP edge, in front of everything else (plain ASGI: streams pass through it
untouched). It refuses, before any route runs:

- any request while the server drains on SIGTERM, or on a connection past the cap
  (server/cli/connections.py marks those; `/healthz` is still answered there): 503 `unavailable`;
- a browser's request from a page of a foreign origin that would change something (POST, PUT,
  PATCH, DELETE), and a CORS preflight from an origin not allowed: 403 `forbidden`;
- a body that is not `application/json` (a route may accept more types): 415.

Why the body type matters: a page on any origin may `fetch()` with a `text/plain` body and no
preflight (a CORS "simple request"); a JSON body needs a preflight, which only an allowed
origin passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.datastructures import Headers, State
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.request import json_response
from server.errors import ApiError, Forbidden, ShuttingDown, Unavailable, UnsupportedMediaType

OVERFLOW = "sessiond.overflow"  # scope["extensions"] key of a request on a connection past the cap
JSON_TYPES = ("application/json",)
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def render(error: ApiError, headers: Mapping[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": error.type, "message": error.message}}
    return json_response(body, error.status, {**error.headers, **(headers or {})})


def media_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return None if value is None else value.split(";", 1)[0].strip().lower()


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


def _endpoint(scheme: str, host: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{host}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


def same_origin(scope: Scope, origin: str) -> bool:
    """The page is the server's own: its origin is the scheme, host and port the request was
    addressed to (the Host header)."""
    host = Headers(scope=scope).get("host")
    if host is None:
        return False
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.username:
        return False
    mine = _endpoint(scope.get("scheme", "http"), host)
    theirs = _endpoint(parts.scheme, parts.netloc)
    return mine is not None and mine == theirs


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        state: State,
        cors_origins: list[str],
        body_types: Mapping[str, tuple[str, ...]],
    ) -> None:
        self.app = app
        self.state = state  # the app's: `draining` is set on SIGTERM (cli.Server)
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.body_types = body_types

    def allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        error, headers = refusal
        await render(error, headers)(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[ApiError, dict[str, str]] | None:
        if getattr(self.state, "draining", False):
            error: ApiError = ShuttingDown("the server is shutting down; retry shortly")
            return error, {"Connection": "close"}
        if OVERFLOW in (scope.get("extensions") or {}) and scope["path"] != "/healthz":
            error = Unavailable(
                "the server has as many connections open as it takes; retry shortly"
            )
            return error, {"Connection": "close"}
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        method = scope["method"]
        if origin is not None and not self.allowed(origin) and not same_origin(scope, origin):
            if method == "OPTIONS" and "access-control-request-method" in headers:
                return Forbidden(self._foreign(origin, "may not call this API")), {}
            if method in CHANGING:
                return Forbidden(self._foreign(origin, f"may not send {method} here")), {}
        if has_body(headers):
            accepted = self.body_types.get(scope["path"], JSON_TYPES)
            kind = media_type(headers)
            if kind not in accepted:
                return self._unsupported(kind, accepted), self._cors(origin)
        return None

    def _foreign(self, origin: str, what: str) -> str:
        allowed = ", ".join(sorted(self.origins)) if self.origins else "none"
        return (
            f"a page from origin {origin[:200]!r} {what}: it is not the server's own origin nor "
            f"an allowed one (allowed: {allowed}); start the server with --cors-origin "
            f"{origin[:200]} (or SESSIOND_CORS_ORIGINS) to allow it"
        )

    def _unsupported(self, kind: str | None, accepted: tuple[str, ...]) -> ApiError:
        sent = f"Content-Type {kind}" if kind else "no Content-Type"
        return UnsupportedMediaType(
            f"the request body has {sent}; send it as {' or '.join(accepted)}"
        )

    def _cors(self, origin: str | None) -> dict[str, str]:
        """An allowed page may read the refusal (CORSMiddleware never sees it)."""
        if origin is None or not self.allowed(origin):
            return {}
        return {"Access-Control-Allow-Origin": "*" if self.any_origin else origin, "Vary": "Origin"}
