"""The baseline: a bare Starlette app that serves sessiond's workloads with no work behind
them, under uvicorn with the settings `sessiond serve` uses (loop and http "auto", so uvloop
and httptools; the same log level). Run as `python -m bench.baseline --port N`.

- POST /stream?words=N     a run's pre-encoded SSE frames from memory, one per chunk
- POST /paced?words=N&delay_ms=D   the same frames, delta i due i x D ms after the first
                                   is asked for, as the scripted provider paces
- GET  /idle               `retry:` then nothing (a ping every 15 s) until the client leaves
- POST /turn               decode a JSON body, answer a small JSON object
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench import workload

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
IDLE_PINGS = 240  # 15 s apart: an idle stream lasts at most an hour


def _int(request: Request, name: str, default: int) -> int:
    return int(request.query_params.get(name, default))


def create_app() -> Starlette:
    cache: dict[int, list[bytes]] = {}
    encoder = msgspec.json.Encoder()

    def frames(n: int) -> list[bytes]:
        if n not in cache:
            cache[n] = workload.run_frames(n)
        return cache[n]

    def sse(body: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def stream(request: Request) -> Response:
        await request.body()
        chunks = frames(_int(request, "words", 20_000))

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return sse(body())

    async def paced(request: Request) -> Response:
        await request.body()
        n = _int(request, "words", 200)
        delay = _int(request, "delay_ms", 50) / 1000
        chunks = frames(n)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks[:3]:
                yield chunk
            loop = asyncio.get_running_loop()
            due = loop.time()
            for chunk in chunks[3 : 3 + n]:  # on the scripted provider's schedule
                due += delay
                await asyncio.sleep(max(0.0, due - loop.time()))
                yield chunk
            for chunk in chunks[3 + n :]:
                yield chunk

        return sse(body())

    async def idle(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield workload.RETRY
            for _ in range(IDLE_PINGS):
                await asyncio.sleep(15)
                yield workload.PING

        return sse(body())

    async def turn(request: Request) -> Response:
        message = msgspec.json.decode(await request.body())
        reply = {
            "response": "ok done",
            "tool_calls": [],
            "usage": {"input_tokens": 5, "output_tokens": 2},
            "steps": 1,
            "stop_reason": "end_turn",
            "status": "completed",
            "run_id": workload.RUN_ID,
            "session_id": workload.RUN_ID,
            "pending_tool_calls": [],
            "echo": len(message),
        }
        return Response(encoder.encode(reply), media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/stream", stream, methods=["POST"]),
            Route("/paced", paced, methods=["POST"]),
            Route("/idle", idle, methods=["GET"]),
            Route("/turn", turn, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")  # sessiond's default
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
        loop="auto",
        http="auto",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
