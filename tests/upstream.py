"""Loopback stand-ins for the model providers' HTTP APIs.

`Upstream` is a tiny HTTP/1.1 server written on `asyncio.start_server`, so that a test decides
every byte: it replays scripted replies (SSE streams in each provider's exact format, JSON
errors, `retry-after`), can drop the connection mid-body, can hold a stream open or send one
piece forever (pings only, endless text), and records
each request (headers, JSON body, arrival time, when the client hung up). Replies are chunked,
one HTTP chunk per scripted piece, and every connection carries one request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from server.errors import ProviderError
from server.providers.base import Provider, ProviderContext, ProviderRequest, ProviderSettings

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 529: "Overloaded"}


@dataclass
class Reply:
    status: int = 200  # 0: hang up without answering
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False  # drop the connection after the chunks, without ending the body
    hold: bool = False  # after the chunks, keep the body open until the client hangs up
    delay_s: float = 0.0  # pause before each chunk
    forever: bytes = b""  # after the chunks, this one again and again until the client hangs up


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: float | None = None


class Upstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen = await read_request(reader)
            self.requests.append(seen)
            reply = self.replies.popleft() if self.replies else Reply(500, [b"nothing scripted"])
            try:
                if reply.status:
                    await send(reply, writer)
                if reply.hold:
                    await reader.read()  # returns b"" once the client closes its end
            finally:
                seen.closed_at = time.monotonic()
                seen.closed.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> Seen:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *lines = head.strip().split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(method, path, headers, json.loads(raw) if raw else None)


async def send(reply: Reply, writer: asyncio.StreamWriter) -> None:
    content_type = "text/event-stream" if reply.status == 200 else "application/json"
    headers = {"content-type": content_type, **reply.headers}
    headers |= {"transfer-encoding": "chunked", "connection": "close"}
    head = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode())
    await writer.drain()
    for chunk in reply.chunks:
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    while reply.forever:  # a write to a closed connection fails sooner or later
        await asyncio.sleep(reply.delay_s)
        writer.write(b"%x\r\n%s\r\n" % (len(reply.forever), reply.forever))
        await writer.drain()
        if writer.is_closing():  # a write failed: the client has hung up
            raise ConnectionResetError("the client hung up")
    if not (reply.cut or reply.hold):
        writer.write(b"0\r\n\r\n")
        await writer.drain()


ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'  # as the Messages API sends it
OPENAI_KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment, as OpenAI-compatible servers send


def anthropic_sse(*events: dict[str, Any]) -> list[bytes]:
    """One chunk per event, in the Messages API's framing (`event:` then `data:`)."""
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def openai_sse(*chunks: dict[str, Any], done: bool = True) -> list[bytes]:
    """One chunk per `data:` line, ended by `data: [DONE]` as Chat Completions does."""
    frames = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n".encode() for c in chunks]
    return frames + ([b"data: [DONE]\n\n"] if done else [])


def split(data: bytes, size: int) -> list[bytes]:
    """Cut a byte stream into pieces of `size`, ignoring line and event boundaries."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def json_error(status: int, kind: str, message: str, **headers: str) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Reply(status, [json.dumps(body).encode()], headers)


def context(http: Any, env: dict[str, str], **settings: Any) -> ProviderContext:
    fast = {"retry_base_s": 0.01, "retry_max_s": 1.0, "read_timeout_s": 5.0} | settings
    return ProviderContext(http=http, settings=ProviderSettings(**fast), env=env)


def request(**fields: Any) -> ProviderRequest:
    defaults: dict[str, Any] = {
        "model": "test-model",
        "system": None,
        "messages": [],
        "tools": [],
        "max_tokens": None,
        "temperature": None,
        "options": {},
        "step": 0,
    }
    return ProviderRequest(**(defaults | fields))


async def collect(provider: Provider, req: ProviderRequest) -> tuple[list[Any], Any]:
    """Every event the provider yields, and the ProviderError that ended it (or None)."""
    events: list[Any] = []
    try:
        async with aclosing(provider.stream(req)) as stream:
            async for event in stream:
                events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None
