"""Every request, seen once at the edge (plain ASGI, outside the guard, so refusals count too):
its request id (`X-Request-Id` as sent, else a new one; sent back either way), one count by
route template and status, one log line when it ends.

The route is the template Starlette matched (`/sessions/{session_id}`), never the raw path:
the label set stays as small as the route table, and no log line carries what a client put
in a path. A stream's body chunks skip this wrapper (api/sse.py's KeepSend sits outside it),
so it costs a stream nothing per event.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.ids import token_hex
from server.meter import Meter

log = logging.getLogger("sessiond.http")
REQUEST_ID = "sessiond.request_id"  # scope key of the request's id
NOTE = "sessiond.note"  # scope key of a word on how the request went, for its log line
UNMATCHED = "unmatched"  # the route label of a request no route took
_GOOD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    """The id the client sent, if it is a plain token of at most 128 characters; else a new
    one (a client's id is echoed into logs and headers: nothing else may pass)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _GOOD_ID.fullmatch(text):
                return text
            break
    return token_hex(8)


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Observe:
    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        rid = scope[REQUEST_ID] = request_id(scope)
        header = (b"x-request-id", rid.encode())
        answer: dict[str, object] = {"status": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(header)
                answer["run_id"] = _header(headers, b"sessiond-run-id")
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._ended(scope, rid, answer, time.perf_counter() - began)

    def _ended(self, scope: Scope, rid: str, answer: dict[str, object], seconds: float) -> None:
        route = route_of(scope)
        status = answer["status"]
        assert isinstance(status, int)
        self.meter.request(route, status)
        params = scope.get("path_params") or {}
        fields: dict[str, object] = {
            "request_id": rid,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        session_id = params.get("session_id")
        run_id = params.get("run_id") or answer.get("run_id")
        if session_id is not None:
            fields["session_id"] = session_id
        if run_id is not None:
            fields["run_id"] = run_id
        line = f"{scope['method']} {route} {status}"
        note = scope.get(NOTE)
        if note is not None:
            line = f"{line}: {note}"
        log.info(line, extra={"fields": fields})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
