"""Server-Sent Events responses: `retry:` first, events coalesced into one chunk per batch,
a `ping` event (no `id:`) whenever the stream has been quiet for the ping interval.

`EventStream` is a plain ASGI response rather than sse-starlette's `EventSourceResponse`.
Ours needs none of what that one adds (its pings are comments, we send our own ping events;
its shutdown handling we turn off, our runner drains instead), and what it adds is paid per
connection and per send: four tasks, a task group and a watcher of the process-wide shutdown
flag for every stream, a cancel scope around every send. Here a stream is a task that serves
it (the request's task waits on it, in the app's middleware chain, which a stream woken per
event would otherwise resume each time: bench many), one that listens for the client leaving,
and an entry in the loop's ticker for its send timeout (hub.Ticker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import events
from server.api.limits import key_of, limits
from server.events import EventRow
from server.meter import Meter
from server.runs.signals import Ticker

log = logging.getLogger("sessiond.sse")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


SEND_KEY = "sessiond.send"


class KeepSend:
    """Wraps the whole app, outside Starlette's own middleware (see app.py), and keeps the
    `send` it is given in the scope. A stream sends its headers down the whole chain, then its
    body chunks through this `send` directly: Starlette wraps `send` in its error middleware
    and in the exception handling of the app and of the route, each only to see the response
    start, and a stream of many small chunks would pay those coroutine calls for every chunk
    (bench stream, bench many)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SEND_KEY] = send
        await self.app(scope, receive, send)


def _chunk(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


def run_frames(rows: list[EventRow]) -> bytes:
    """A run's own stream: `id:` is the run's sequence number."""
    return events.frames(rows)


def session_frames(rows: list[EventRow]) -> bytes:
    """The session channel: `id:` is `<run_id>:<seq>` and `data` names the run."""
    return b"".join(
        events.frame(f"{run_id}:{seq}", type_, events.with_run_id(type_, data, run_id))
        for run_id, seq, type_, data in rows
    )


class Framed:
    """A stream's batches and how to frame them, `retry:` first; the response iterates the
    batches itself (a generator in between cost a frame resumed per event)."""

    __slots__ = ("batches", "encode", "opening", "ping", "retry_ms")

    def __init__(
        self,
        batches: AsyncIterator[list[EventRow]],
        encode: Callable[[list[EventRow]], bytes],
        retry_ms: int,
    ) -> None:
        self.batches = batches
        self.encode = encode
        self.retry_ms = retry_ms
        # what the stream opens with, if not `retry:` in a block of its own
        self.opening: bytes | None = None
        self.ping = events.PING_FRAME  # sent when a stream has been quiet

    async def aclose(self) -> None:
        aclose = getattr(self.batches, "aclose", None)
        if aclose is not None:
            await aclose()


def framed(
    request: Request,
    batches: AsyncIterator[list[EventRow]],
    encode: Callable[[list[EventRow]], bytes],
) -> Framed:
    return Framed(batches, encode, request.app.state.settings.sse_retry_ms)


def stream(
    request: Request,
    body: Framed,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> EventStream:
    closed = limits(request).open_stream(key_of(request))
    meter: Meter = request.app.state.meter
    response = EventStream(body, request.app.state.settings.sse_send_timeout_s, on_disconnect)
    response.meter = meter
    meter.stream(1)

    def ended() -> None:
        meter.stream(-1)
        closed()

    response.closed = ended
    return response


class SendTimeout(TimeoutError):
    """The client read nothing for the send timeout: the connection is dropped."""


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        body: Framed,
        send_timeout: float,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.framed = body
        self.send_timeout = send_timeout
        self.on_disconnect = on_disconnect
        self.closed: Callable[[], None] | None = None  # told when the stream ends
        self.meter = Meter()  # counts the events sent, a write at a time
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        try:
            if scope["method"] == "HEAD":  # headers only: the stream would never end
                await send(start)
                await send(END)
                return
            async with contextlib.aclosing(self.framed) as body:
                connection = _Connection(self, send, scope.get(SEND_KEY, send))
                await asyncio.create_task(connection.serve(start, body, receive))
        finally:
            if self.closed is not None:
                self.closed()


class _Connection:
    """One streaming response in flight: its sends, its send watchdog (`tick`), its disconnect
    listener.

    Both the watchdog and the listener stop the stream by cancelling the task serving it (the
    body generator then unwinds from wherever it waits); `_cause` tells that cancel apart from
    one by the server.
    """

    __slots__ = (
        "_cause",
        "_send",
        "_send_body",
        "_sending",
        "_started",
        "_task",
        "response",
    )

    def __init__(self, response: EventStream, send: Send, send_body: Send) -> None:
        self.response = response
        self._send = send  # down the app's chain, for the response start
        self._send_body = send_body
        self._task: asyncio.Task[None] | None = None  # the one serving the stream
        self._sending = False
        self._started = 0.0  # when the send in progress began
        self._cause: str | None = None

    async def serve(self, start: Message, body: Framed, receive: Receive) -> None:
        self._task = asyncio.current_task()
        listener = asyncio.create_task(self._listen(receive))
        watchdog = Ticker.every(self.response.send_timeout)
        watchdog.add(self)
        try:
            await self.send(start)
            self._send = self._send_body
            opening = body.opening
            if opening is None:
                opening = events.retry_frame(body.retry_ms)
            if opening:
                await self.send(_chunk(opening))
            sent = self.response.meter.events_sent
            async for rows in body.batches:
                if rows:
                    sent(len(rows))
                data = body.encode(rows) if rows else body.ping
                if data:  # (an empty chunk would end a chunked body)
                    await self.send(_chunk(data))
            self._cause = "finished"  # from here on a disconnect is no longer the client leaving
            await self.send(END)
        except asyncio.CancelledError:
            if self._cause in (None, "finished"):
                raise  # cancelled by the server
            assert self._task is not None
            self._task.uncancel()
            if self._cause == "timeout":
                raise SendTimeout(
                    f"no send completed in {self.response.send_timeout:g} s"
                ) from None
        finally:
            listener.cancel()
            watchdog.discard(self)

    async def send(self, message: Message) -> None:
        self._started = asyncio.get_running_loop().time()
        self._sending = True
        await self._send(message)
        self._sending = False

    def tick(self, now: float) -> None:
        """The watchdog: a send in progress for the send timeout ends the stream."""
        if self._sending and now - self._started >= self.response.send_timeout:
            self._stop("timeout")

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if self._cause is not None:
            return
        if self.response.on_disconnect is not None:
            try:
                await self.response.on_disconnect()
            except Exception:
                log.exception("on-disconnect handler failed")
        self._stop("disconnect")

    def _stop(self, cause: str) -> None:
        if self._cause is None and self._task is not None:
            self._cause = cause
            self._task.cancel()
