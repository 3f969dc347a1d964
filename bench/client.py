"""A small, fast asyncio HTTP/1.1 client: keep-alive requests and SSE streams.

One `Connection` is one TCP connection; it carries one request at a time. Responses may be
sized by Content-Length, chunked, or end with the connection. An SSE body is split into
events as bytes arrive; each event carries the `time.perf_counter()` of the read that
completed it, which is what the latency scenarios measure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

# (event type, data, arrival time)
OnEvent = Callable[[bytes, bytes, float], None]

_HEAD, _LEN, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _CLOSE, _IDLE = range(8)


class HttpError(Exception):
    """The connection broke or the peer spoke something other than HTTP/1.1."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Sink:
    """Receives one response: its head, its body pieces, its end."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.parts: list[bytes] = []
        self.future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    def head(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.status, self.headers = status, headers

    def body(self, data: bytes, t: float) -> None:
        self.parts.append(data)

    def abandon(self) -> None:
        self.future.cancel()

    def done(self, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(Response(self.status, self.headers, b"".join(self.parts)))


class Stream(_Sink):
    """An SSE response: splits a 200 text/event-stream body into events as they arrive (any
    other body is kept whole). `opened` resolves at the first body bytes, `future` at the end."""

    def __init__(self, on_event: OnEvent) -> None:
        super().__init__()
        self.on_event = on_event
        self.pending = b""
        self.first_byte: float | None = None
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def abandon(self) -> None:
        self.opened.cancel()
        super().abandon()

    def done(self, error: BaseException | None) -> None:
        if not self.opened.done():
            if error is not None:
                self.opened.set_exception(error)
                self.opened.exception()  # retrieved: `future` reports it
            else:
                self.opened.set_result(time.perf_counter())
        super().done(error)

    def body(self, data: bytes, t: float) -> None:
        if self.first_byte is None:
            self.first_byte = t
            if not self.opened.done():
                self.opened.set_result(t)
        if self.status != 200:
            self.parts.append(data)
            return
        text, held = self.pending + data, b""
        if b"\r" in text:  # SSE allows CRLF and CR line ends too
            if text.endswith(b"\r"):  # its \n may be in the next read
                text, held = text[:-1], b"\r"
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames = text.split(b"\n\n")
        self.pending = frames.pop() + held
        for frame in frames:
            _dispatch(frame, t, self.on_event)


def _dispatch(frame: bytes, t: float, on_event: OnEvent) -> None:
    kind, data = b"message", None
    for line in frame.split(b"\n"):
        if line.startswith(b"event: "):
            kind = line[7:]
        elif line.startswith(b"data: "):
            data = line[6:]
    if data is not None:  # a `retry:` block or a comment carries no event
        on_event(kind, data, t)


class Connection(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _IDLE
        self.remaining = 0
        self.sink: _Sink | None = None
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()
        self.buf += data
        try:
            self._parse(t)
        except (ValueError, IndexError) as exc:
            self._fail(HttpError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == _CLOSE and self.sink is not None:
            self._finish()
        elif self.sink is not None:
            self._fail(HttpError(f"connection closed mid-response ({exc or 'EOF'})"))

    # -- requests ---------------------------------------------------------------------------
    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: str = ""
    ) -> Response:
        sink = _Sink()
        self._send(method, path, body, headers, sink)
        return await sink.future

    def open_stream(
        self, method: str, path: str, on_event: OnEvent, body: bytes | None = None
    ) -> Stream:
        """Send a request whose SSE events go to `on_event`; await the result's `opened` or
        `future`."""
        sink = Stream(on_event)
        self._send(method, path, body, "Accept: text/event-stream\r\n", sink)
        return sink

    async def stream(
        self, method: str, path: str, on_event: OnEvent, body: bytes | None = None
    ) -> Response:
        """Send a request and feed its SSE events to `on_event` until the body ends."""
        return await self.open_stream(method, path, on_event, body).future

    def close(self) -> None:
        """Close now; a response still coming in is abandoned (its future is cancelled)."""
        sink, self.sink, self.state = self.sink, None, _IDLE
        if sink is not None:
            sink.abandon()
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def _send(self, method: str, path: str, body: bytes | None, headers: str, sink: _Sink) -> None:
        if self.closed or self.transport is None:
            raise HttpError("the connection is closed")
        if self.sink is not None:
            raise HttpError("one request at a time on a connection")
        self.sink, self.state = sink, _HEAD
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"\r\n" + (body or b""))

    # -- parsing ----------------------------------------------------------------------------
    def _parse(self, t: float) -> None:
        while self.sink is not None:
            if self.state == _CLOSE:  # the body runs until the connection ends
                self.sink.body(bytes(self.buf), t)
                self.buf.clear()
                return
            if not _STEPS[self.state](self, t):
                return

    def _head(self, t: float) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        assert self.sink is not None
        self.sink.head(status, headers)
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self.state = _CHUNK_SIZE
        elif b"content-length" in headers:
            self.remaining, self.state = int(headers[b"content-length"]), _LEN
            if self.remaining == 0:
                self._finish()
        else:
            self.state = _CLOSE
        return True

    def _sized(self, t: float) -> bool:
        if not self.buf:
            return False
        take = min(self.remaining, len(self.buf))
        assert self.sink is not None
        self.sink.body(bytes(self.buf[:take]), t)
        del self.buf[:take]
        self.remaining -= take
        if self.remaining == 0:
            if self.state == _LEN:
                self._finish()
            else:
                self.state = _CHUNK_END
        return True

    def _chunk_size(self, t: float) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(self.buf[:end]).split(b";")[0], 16)
        del self.buf[: end + 2]
        self.remaining = size
        self.state = _CHUNK_DATA if size else _TRAILER
        return True

    def _chunk_end(self, t: float) -> bool:
        if len(self.buf) < 2:
            return False
        del self.buf[:2]
        self.state = _CHUNK_SIZE
        return True

    def _trailer(self, t: float) -> bool:
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        blank = end == 0
        del self.buf[: end + 2]
        if blank:
            self._finish()
        return True

    def _finish(self) -> None:
        sink, self.sink, self.state = self.sink, None, _IDLE
        if sink is not None:
            sink.done(None)

    def _fail(self, error: BaseException) -> None:
        sink, self.sink, self.state = self.sink, None, _IDLE
        if sink is not None:
            sink.done(error)
        self.close()


_STEPS: dict[int, Callable[[Connection, float], bool]] = {
    _HEAD: Connection._head,
    _LEN: Connection._sized,
    _CHUNK_SIZE: Connection._chunk_size,
    _CHUNK_DATA: Connection._sized,
    _CHUNK_END: Connection._chunk_end,
    _TRAILER: Connection._trailer,
}


async def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: Connection(host, port), host, port), timeout
    )
    return conn


async def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = 30.0,
    headers: str = "",
) -> Response:
    """One request on a connection of its own (`headers`: lines of "Name: value" and CRLF)."""
    conn = await connect(port)
    try:
        return await asyncio.wait_for(conn.request(method, path, body, headers), timeout)
    finally:
        conn.close()
