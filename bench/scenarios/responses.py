"""One 20,000-token reply through OpenAI's Responses stream, against the native stream.

The same server, the same agent (a scripted text of 20,000 words, zero delay) and the same
reader (`curl -sN`, else httpx): one run streamed from POST /sessions/{id}/message/stream,
then one streamed from POST /v1/responses (`stream: true`, the same kind of session by
`conversation`), alternately, five of each after one warm-up each. events/s = the events
received (each `event:` line: 20,006 native, 20,008 Responses) / the reader's time from
request sent to body ended; the figure is the Responses median over the native median. The
server's CPU time over each read, per event, is the steadier figure on a shared machine.
Both persist the run and its event log; the Responses stream translates every event on the
way out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec

from bench import workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, median, ratio
from bench.scenarios.stream import Read, curl, httpx_read

NAME = "responses"
TITLE = "one 20,000-token reply via /v1/responses, against the native stream"
BUDGET_S = 90.0


async def read(url: str, body: bytes, out: Path) -> Read:
    reader = curl if shutil.which("curl") else httpx_read
    got = await reader(url, out, "", body)
    if got.status != 200 or not got.completed:
        raise RuntimeError(f"{url}: HTTP {got.status}, {got.events} events, no end")
    return got


async def run(ctx: Context, result: Result) -> None:
    n = ctx.size(20_000, 500)
    reps = ctx.size(5, 1)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("responses", n))
    sessions = await api.sessions(agent, 2 * (reps + 1))
    base = f"http://127.0.0.1:{server.port}"
    native: list[Read] = []
    ours: list[Read] = []
    cpu = {"native": 0.0, "responses": 0.0}
    for i in range(reps + 1):  # alternated, so that a noisy moment hits both
        sid = sessions[2 * i]
        before = server.cpu_s()
        got = await read(f"{base}/sessions/{sid}/message/stream", JSON_BODY, ctx.root / "n.sse")
        cpu["native"] += (server.cpu_s() - before) if i else 0.0
        native.append(got)
        body = {"model": agent, "input": "go", "stream": True, "conversation": sessions[2 * i + 1]}
        before = server.cpu_s()
        got = await read(f"{base}/v1/responses", msgspec.json.encode(body), ctx.root / "r.sse")
        cpu["responses"] += (server.cpu_s() - before) if i else 0.0
        ours.append(got)
    await ctx.stop(server)
    native, ours = native[1:], ours[1:]  # the first of each is the warm-up
    rate = median([r.events / r.seconds for r in ours])
    native_rate = median([r.events / r.seconds for r in native])
    result.details |= {
        "events_per_run": {"responses": ours[0].events, "native": native[0].events},
        "reader": "curl" if shutil.which("curl") else "httpx",
        "responses_seconds": [r.seconds for r in ours],
        "native_seconds": [r.seconds for r in native],
    }
    share = ratio(rate, native_rate)
    result.add(
        Figure(
            "events/s via /v1/responses (vs native stream)",
            rate,
            "ev/s",
            native_rate,
            share,
            "≥ 0.8x native",
            share is not None and share >= 0.8,
        )
    )
    per_event = cpu["responses"] / (reps * ours[0].events) * 1e6
    native_per_event = cpu["native"] / (reps * native[0].events) * 1e6
    result.add(
        Figure(
            "server CPU per event (vs native)",
            per_event,
            "µs",
            native_per_event,
            ratio(per_event, native_per_event),
        )
    )
