"""The SSE response alone, as an ASGI app: what it sends, and how it ends (the end of the
events, the client leaving, a client that reads nothing, the server stopping)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.api.sse import EventStream, Framed, SendTimeout, run_frames
from server.events import EventRow
from tests.waiting import until

Message = dict[str, Any]


class Client:
    """receive/send of one request; `leave()` makes receive report a disconnect."""

    def __init__(self, stall: bool = False) -> None:
        self.sent: list[Message] = []
        self.stall = stall
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.stall and message.get("more_body") and len(self.sent) > 2:
            await asyncio.Event().wait()  # a client that reads nothing more
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


class Batches:
    def __init__(self, batches: list[list[EventRow]], then_wait: bool = False) -> None:
        self.batches = batches
        self.then_wait = then_wait
        self.started = False
        self.closed = False

    async def __call__(self) -> AsyncIterator[list[EventRow]]:
        self.started = True
        try:
            for batch in self.batches:
                yield batch
            if self.then_wait:
                await asyncio.Event().wait()
        finally:
            self.closed = True


def rows(*seqs: int) -> list[EventRow]:
    return [("r", s, "text_delta", b'{"type":"text_delta","text":"x","index":0}') for s in seqs]


async def serve(stream: EventStream, client: Client, method: str = "POST") -> None:
    await stream({"type": "http", "method": method}, client.receive, client.send)  # type: ignore[arg-type]


def test_retry_first_then_one_chunk_per_batch_and_pings_then_the_end() -> None:
    async def go() -> None:
        source = Batches([rows(1, 2), [], rows(3)])
        client = Client()
        await serve(EventStream(Framed(source(), run_frames, 3000), 30), client)
        start = client.sent[0]
        assert start["status"] == 200
        assert dict(start["headers"]) == {
            b"cache-control": b"no-cache",
            b"x-accel-buffering": b"no",
            b"connection": b"keep-alive",
            b"content-type": b"text/event-stream; charset=utf-8",
        }
        chunks = [m["body"] for m in client.sent[1:]]
        assert chunks[0] == b"retry: 3000\n\n"
        assert chunks[1] == run_frames(rows(1, 2))
        assert chunks[2] == b'event: ping\ndata: {"type":"ping"}\n\n'
        assert chunks[3] == run_frames(rows(3))
        assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert source.closed

    asyncio.run(go())


def test_head_sends_headers_only() -> None:
    async def go() -> None:
        source = Batches([rows(1)])
        client = Client()
        await serve(EventStream(Framed(source(), run_frames, 3000), 30), client, "HEAD")
        assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
        assert client.body() == b"" and not source.started

    asyncio.run(go())


def test_a_client_that_leaves_ends_the_stream_after_its_handler() -> None:
    async def go() -> None:
        source = Batches([rows(1)], then_wait=True)
        client = Client()
        called: list[bool] = []

        async def on_disconnect() -> None:
            called.append(source.closed)

        stream = EventStream(Framed(source(), run_frames, 3000), 30, on_disconnect)
        task = asyncio.create_task(serve(stream, client))
        await until(lambda: len(client.sent) >= 3, "the first batch to be sent")  # start, retry
        client.gone.set()
        await asyncio.wait_for(task, 2)  # returns normally: a client leaving is no error
        assert called == [False] and source.closed

    asyncio.run(go())


def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout() -> None:
    async def go() -> None:
        source = Batches([rows(1), rows(2), rows(3)])
        client = Client(stall=True)
        stream = EventStream(Framed(source(), run_frames, 3000), 0.05)
        with pytest.raises(SendTimeout):
            await asyncio.wait_for(serve(stream, client), 2)
        assert source.closed

    asyncio.run(go())


def test_a_stream_cancelled_by_the_server_stays_cancelled() -> None:
    async def go() -> None:
        source = Batches([], then_wait=True)
        client = Client()
        task = asyncio.create_task(serve(EventStream(Framed(source(), run_frames, 1), 30), client))
        await until(lambda: source.started, "the stream to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert source.closed

    asyncio.run(go())
