"""Anthropic's Messages API against the native stream.

One run whose reply is 20,000 text deltas (a scripted text of 20,000 words, zero delay), read
by `curl -sN` twice over in the same server: from POST /v1/messages with `stream: true` (each
call a new session; the run's events translated into Anthropic's `content_block_delta` and
friends) and from POST /sessions/{id}/message/stream (the run's own events). events/s =
events received / curl's `time_total`, median of seven runs of each after one warm-up each,
the two kinds alternated so that both see the same machine; and the server's CPU time an
event for each kind (less noisy on a shared machine). Without a curl binary the reader is
httpx.
"""

from __future__ import annotations

import shutil

import msgspec

from bench import workload
from bench.harness import Api, Context
from bench.report import Figure, Result, median, ratio
from bench.scenarios.stream import Read, curl, httpx_read

NAME = "messages"
TITLE = "Anthropic /v1/messages stream vs the native stream: one 20,000-token reply"
BUDGET_S = 90.0


async def read(url: str, ctx: Context, i: int, body: bytes, end: bytes) -> Read:
    reader = curl if shutil.which("curl") else httpx_read
    got = await reader(url, ctx.root / f"messages-{i}.sse", "", body)
    data = (ctx.root / f"messages-{i}.sse").read_bytes() if reader is curl else b""
    if got.status != 200 or (data and end not in data):
        raise RuntimeError(f"{url}: HTTP {got.status}, {got.events} events, no {end.decode()}")
    return got


async def run(ctx: Context, result: Result) -> None:
    n = ctx.size(20_000, 500)
    reps = ctx.size(7, 1)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("messages", n))
    sessions = await api.sessions(agent, reps + 1)
    base_url = f"http://127.0.0.1:{server.port}"
    body = msgspec.json.encode(
        {
            "model": "messages",
            "max_tokens": n * 2,
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
        }
    )
    native_body = b'{"message":"go"}'
    ours: list[Read] = []
    theirs: list[Read] = []
    cpu = {"messages": 0.0, "native": 0.0}
    for i, sid in enumerate(sessions):
        url = f"{base_url}/v1/messages"
        before = server.cpu_s()
        translated = await read(url, ctx, 2 * i, body, b"event: message_stop")
        between = server.cpu_s()
        native_url = f"{base_url}/sessions/{sid}/message/stream"
        native = await read(native_url, ctx, 2 * i + 1, native_body, b"event: done")
        if i:  # the first of each is the warm-up
            ours.append(translated)
            theirs.append(native)
            cpu["messages"] += between - before
            cpu["native"] += server.cpu_s() - between
    await ctx.stop(server)

    rate = median([r.events / r.seconds for r in ours])
    base = median([r.events / r.seconds for r in theirs])
    result.details |= {
        "events_per_run": ours[0].events,
        "native_events_per_run": theirs[0].events,
        "reader": "curl" if shutil.which("curl") else "httpx",
        "messages_seconds": [r.seconds for r in ours],
        "native_seconds": [r.seconds for r in theirs],
    }
    share = ratio(rate, base)
    result.add(
        Figure(
            "events/s, /v1/messages (curl)",
            rate,
            "ev/s",
            base,
            share,
            "≥ 0.8x native",
            share is not None and share >= 0.8,
        )
    )
    per_event = cpu["messages"] / sum(r.events for r in ours) * 1e6
    native_per_event = cpu["native"] / sum(r.events for r in theirs) * 1e6
    result.add(
        Figure(
            "server CPU per event",
            per_event,
            "µs",
            native_per_event,
            ratio(per_event, native_per_event),
        )
    )
