"""uvicorn's HTTP/1.1 protocol with what it lacks at the edge: deadlines for a request's headers
and body, and a cap on open connections below the process's file-descriptor limit.

- A request's headers must arrive within `request_timeout_s` of the connection opening (or of
  the request's first byte, on a kept-alive connection), and its body within as long again
  of the headers. Past a deadline the client gets a 408 JSON error where a response can still
  be sent; the connection is closed either way. uvicorn's `timeout_keep_alive` only covers
  the quiet between requests: alone, it never drops a client trickling its headers.
- Past `max_connections` a few more connections (`OVERFLOW`) are still taken: each is served
  one request, `/healthz` normally and anything else a 503 `unavailable` JSON error with
  `Retry-After` (server/api/guard.py answers them), then closed. Beyond those a connection is
  closed at once. Without a cap, sockets held open exhaust the descriptors and accept()
  fails for everyone, the health check included.
- A response's head goes out with its body's first write (`HeadHeld`): uvicorn writes the
  status line and headers, then the body, as two writes, so a short JSON answer cost two
  system calls and two segments for the client to read (bench turns). A head whose body does
  not follow in the same turn of the event loop (a stream waiting for its first event) is
  written at the end of that turn.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, cast

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from server.api.guard import OVERFLOW
from server.errors import RequestTimeout

log = logging.getLogger("sessiond.connections")
OVERFLOW_CONNECTIONS = 32
# Descriptors kept for everything but client sockets: the database and its WAL, the provider
# client's pool (up to 100 sockets), tools' files and pipes, logs.
RESERVED_DESCRIPTORS = 256


def default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    spare = soft - RESERVED_DESCRIPTORS - OVERFLOW_CONNECTIONS
    return max(spare, soft // 2, 1)


def timeout_response(message: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    error = RequestTimeout(message)
    body = msgspec.json.encode({"type": "error", "error": {"type": error.type, "message": message}})
    lines = [STATUS_LINE[error.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


class HeadHeld:
    """A connection's transport that holds back a write holding a response's head (it starts
    with the status line) until the next write, which it joins, or the end of the loop's
    turn, whichever comes first; everything else is the transport's own."""

    __slots__ = ("_head", "_loop", "_release", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._release: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if self._release is not None:
                self._release.cancel()
                self._release = None
            self._transport.write(head + bytes(data))
        elif (
            type(data) is bytes and data.startswith(b"HTTP/1.") and not self._transport.is_closing()
        ):
            self._head = bytes(data)
            self._release = self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write the head held back, if any."""
        self._release = None
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._head or b"")

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        if self._release is not None:
            self._release.cancel()
            self._release = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """Configure with `protocol_class()`; one class per server (it holds the overflow set)."""

    request_timeout: float = 30.0
    max_connections: int = 1024
    overflow: set[GuardedProtocol] = set()
    # Slots, not the instance dict uvicorn's attributes fill: four more keys there made it
    # grow to the next size, 1.5 KB a connection (bench many, RSS per stream).
    __slots__ = ("_awaiting", "_began", "_deadline", "_past_cap")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting = "headers"  # what the deadline is for: "headers", "body" or "" (none)
        self._began = False  # a byte of the current request has arrived
        self._past_cap = False

    # -- the cap ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, HeadHeld(transport, self.loop))
        if len(self.connections) - len(self.overflow) > self.max_connections:
            if len(self.overflow) >= OVERFLOW_CONNECTIONS:
                transport.abort()
                return
            self._past_cap = True
            self.overflow.add(self)
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self.overflow.discard(self)
        self._disarm()
        super().connection_lost(exc)

    # -- the deadlines ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._past_cap:
            self.scope["extensions"] = {OVERFLOW: {}}
        self._began = True
        if self._deadline is None:
            self._arm("headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._past_cap:
            self.cycle.keep_alive = False  # one request, then the descriptor is given back
        self._arm("body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._began = False

    def _arm(self, awaiting: str) -> None:
        self._disarm()
        self._awaiting = awaiting
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._awaiting = ""

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        what = self._awaiting
        message = f"the request {what} did not arrive within {self.request_timeout:g} s"
        answer = timeout_response(message, self.server_state.default_headers)
        cycle = self.cycle if what == "body" else None
        if cycle is not None:
            if not cycle.response_started:
                self.transport.write(answer)
            # the app, if it still reads the body, sees the client gone; its answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        elif self._began:
            self.transport.write(answer)
        if self._began or what == "body":
            log.info("%s from %s", message, _peer(self.client))
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def protocol_class(request_timeout: float, max_connections: int) -> type[GuardedProtocol]:
    class Configured(GuardedProtocol):
        pass

    Configured.request_timeout = request_timeout
    Configured.max_connections = max_connections
    Configured.overflow = set()
    return Configured
