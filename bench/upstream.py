"""A loopback stand-in for Anthropic's Messages API, streaming its exact SSE format (the one
server/providers/anthropic.py reads): message_start, content_block_start, a ping, text deltas
a millisecond apart, content_block_stop, message_delta, message_stop, chunked like the real one.

It runs in the bench process, on the client's event loop, so its timestamps and the client's
share one clock: `timings` holds, per response, the `perf_counter()` right after the first
text delta was written to the socket and right after message_stop was.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

_json = msgspec.json.Encoder()
LEAD_S = 0.002  # quiet time before the first delta, so earlier events are out of the way
GAP_S = 0.001


def event(kind: str, data: bytes) -> bytes:
    body = b"event: %s\ndata: %s\n\n" % (kind.encode(), data)
    return b"%x\r\n%s\r\n" % (len(body), body)


MESSAGE_START = event(
    "message_start",
    b'{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,'
    b'"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}',
)
BLOCK_START = event(
    "content_block_start",
    b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
)
PING = event("ping", b'{"type": "ping"}')
BLOCK_STOP = event("content_block_stop", b'{"type":"content_block_stop","index":0}')
MESSAGE_STOP = event("message_stop", b'{"type":"message_stop"}')
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nrequest-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


def delta(text: str) -> bytes:
    payload = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return event("content_block_delta", _json.encode(payload))


def message_delta(tokens: int) -> bytes:
    payload = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": tokens},
    }
    return event("message_delta", _json.encode(payload))


class Upstream:
    def __init__(self, words: tuple[str, ...] = ("Hello", " from", " the", " double", ".")):
        self.words = words
        self.timings: list[tuple[float, float]] = []
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            for _ in range(100_000):  # requests on one keep-alive connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                await self._respond(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + MESSAGE_START + BLOCK_START + PING)
        await writer.drain()
        await asyncio.sleep(LEAD_S)
        first = 0.0
        for i, word in enumerate(self.words):
            writer.write(delta(word))
            if i == 0:
                first = time.perf_counter()
            await asyncio.sleep(GAP_S)
        writer.write(BLOCK_STOP + message_delta(len(self.words)))
        await asyncio.sleep(GAP_S)
        writer.write(MESSAGE_STOP)
        end = time.perf_counter()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.timings.append((first, end))
