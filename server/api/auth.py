"""Who may call. Auth is on as soon as an API key has been made (or always, with `--auth
required`), and stays on when every key is revoked: revoking the last key must not open the
server to anyone. Then every request but `GET /healthz` and CORS preflights carries a key, as
`Authorization: Bearer <key>` or `x-api-key: <key>` (what Anthropic's SDKs send). A read key
may use GET routes only; a write key every route but /keys and /metrics; an admin key all
(`/metrics` is open to anyone with `--metrics-public`).

Keys are looked up by the SHA-256 of what the request carries and kept for at most
`FRESH_S`: a request costs a hash and a dict lookup, and a revoked key is refused within that
time. A key not found is remembered as unknown for as long, so that a flood of made-up keys
costs no database reads; a key made meanwhile (by `sessiond keys create`, from another
process) has never been tried, so it works at its first use.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api import web
from server.api.guard import render
from server.api.keys import digest
from server.api.tokens import StreamTokens, carried_token
from server.errors import ApiError, Forbidden, Unauthorized
from server.ids import now
from server.models import ApiKey, KeyScope
from server.store import KeyStore

FRESH_S = 1.0  # how long a key's lookup (and the count of keys) is trusted
USED_EVERY_S = 60.0  # a key's last use is written at most this often
MAX_KEPT = 10_000  # keys kept in memory, least recently used first out
RANK: dict[KeyScope, int] = {"read": 0, "write": 1, "admin": 2}
OPEN_PATHS = frozenset({"/healthz", "/sdk.js"})  # the browser SDK holds nothing secret


METRICS = "/metrics"


def needed(method: str, path: str) -> KeyScope:
    if path == "/keys" or path.startswith("/keys/") or path == METRICS:
        return "admin"
    return "read" if method in ("GET", "HEAD") else "write"


def carried(headers: Headers) -> str | None:
    """The key a request carries, if any."""
    authorization = headers.get("authorization")
    if authorization is not None:
        kind, _, value = authorization.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class KeyCache:
    def __init__(
        self, keys: KeyStore, required: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keys = keys
        self.required = required
        self.clock = clock
        self._found: OrderedDict[str, tuple[ApiKey, float, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # digest → when looked up
        self._made = 0
        self._counted = -FRESH_S  # when the keys were last counted
        self._counting: asyncio.Future[int] | None = None  # the count being read, if any

    async def enabled(self) -> bool:
        if self.required:
            return True
        if self.clock() - self._counted >= FRESH_S:
            self._made = await self._count()
        return self._made > 0

    async def _count(self) -> int:
        """The number of keys made; requests that find the last count stale together share
        one read (32 clients used to send 32 reads a second)."""
        if self._counting is None:
            self._counting = asyncio.ensure_future(self.keys.made())
            self._counting.add_done_callback(self._counted_now)
        return await asyncio.shield(self._counting)

    def _counted_now(self, counting: asyncio.Future[int]) -> None:
        self._counting = None
        if not counting.cancelled() and counting.exception() is None:
            self._counted = self.clock()

    async def find(self, key: str) -> ApiKey | None:
        """The key's record; None if it is unknown or revoked."""
        hashed = digest(key)
        kept = self._found.get(hashed)
        at = self.clock()
        if kept is not None and at - kept[1] < FRESH_S:
            self._found.move_to_end(hashed)
            return kept[0]
        missed = self._unknown.get(hashed)
        if missed is not None and at - missed < FRESH_S:
            return None
        record = await self.keys.by_digest(hashed)
        if record is None:
            self._found.pop(hashed, None)
            self._unknown[hashed] = at
            self._unknown.move_to_end(hashed)
            if len(self._unknown) > MAX_KEPT:
                self._unknown.popitem(last=False)
            return None
        self._unknown.pop(hashed, None)
        used = kept[2] if kept is not None else -USED_EVERY_S
        if at - used >= USED_EVERY_S:
            self.keys.used(record.id, now())
            used = at
        self._found[hashed] = (record, at, used)
        self._found.move_to_end(hashed)
        if len(self._found) > MAX_KEPT:
            self._found.popitem(last=False)
        return record


class Gate:
    """ASGI middleware: refuses a request without a valid key of the scope it needs. The key
    found is left in the request's state (`request.state.key`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _open(scope):
            cache: KeyCache | None = getattr(scope["app"].state, "keys", None)
            if cache is not None and scope["method"] != "OPTIONS" and await cache.enabled():
                refusal = await self._refusal(scope, cache)
                if refusal is not None:
                    await render(refusal)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope, cache: KeyCache) -> ApiError | None:
        key = carried(Headers(scope=scope))
        token = carried_token(scope["query_string"]) if key is None else None
        if token is not None:
            return _streaming(scope, token)
        if key is None:
            return _unauthorized(
                "this server needs an API key: send it as Authorization: Bearer <key> "
                "(or x-api-key: <key>)"
            )
        record = await cache.find(key)
        if record is None:
            return _unauthorized("the API key is not valid: unknown or revoked")
        method, path = scope["method"], scope["path"]
        want = needed(method, path)
        if RANK[record.scope] < RANK[want]:
            return Forbidden(
                f"key {record.id} has scope {record.scope}; {method} {path} needs a key of "
                f"scope {want}"
            )
        scope.setdefault("state", {})["key"] = record
        return None


def _open(scope: Scope) -> bool:
    path = scope["path"]
    if path == METRICS:
        return bool(scope["app"].state.settings.metrics_public)
    return path in OPEN_PATHS or web.is_open(path)


def _streaming(scope: Scope, token: str) -> ApiError | None:
    """A stream token (api/tokens.py) in place of a key: on its own stream only. The
    request then acts as a read key of the token's tenant, counted as the key that asked."""
    tokens: StreamTokens | None = getattr(scope["app"].state, "tokens", None)
    claims = tokens.check(token, scope["path"]) if tokens is not None else None
    if claims is None or scope["method"] not in ("GET", "HEAD"):
        return _unauthorized(
            "the stream token is not valid here: it has expired, was altered, or was made "
            "for another stream; ask GET /sessions/{id}/events_url for a new one"
        )
    key = ApiKey(claims.key_id, "stream token", "read", "", tenant=claims.tenant)
    scope.setdefault("state", {})["key"] = key
    return None


def _unauthorized(message: str) -> Unauthorized:
    error = Unauthorized(message)
    error.headers["WWW-Authenticate"] = 'Bearer realm="sessiond"'
    return error
