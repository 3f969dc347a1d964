"""1. Single-stream throughput.

One run whose reply is 20,000 text deltas (a scripted text of 20,000 words, zero delay), read
by `curl -sN` from POST /sessions/{id}/message/stream, against the bare baseline app serving
the same pre-encoded frames one per chunk from memory. events/s = every event received
(20,006: the deltas plus message_start … done) / curl's `time_total` (request sent to body
ended), median of three runs after one warm-up each; sessiond persists the run and its event
log meanwhile. Without a curl binary the reader is httpx. Then an admin key made on the
database turns auth on, and the same runs with the key give events/s with auth on, against
the same server's with it off.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx

from bench import workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, median, ratio

NAME = "stream"
TITLE = "single-stream throughput: one 20,000-event reply read by curl -sN"
BUDGET_S = 90.0


class Read:
    def __init__(self, status: int, seconds: float, data: bytes) -> None:
        self.status = status
        self.seconds = seconds
        self.events = data.count(b"\nevent: ") + data.startswith(b"event: ")
        # a native stream's done (completed), or the Responses stream's own last event
        self.completed = (
            b"event: done" in data and b'"status":"completed"' in data
        ) or b"event: response.completed" in data


async def curl(url: str, out: Path, headers: str = "", body: bytes = JSON_BODY) -> Read:
    argv = ["curl", "-sN", "-X", "POST", "-H", "Content-Type: application/json"]
    for line in filter(None, headers.split("\r\n")):
        argv += ["-H", line]
    argv += ["-d", body.decode(), "-o", str(out), "-w", "%{http_code} %{time_total}", url]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    status, seconds = stdout.decode().split()
    return Read(int(status), float(seconds), out.read_bytes())


async def httpx_read(url: str, out: Path, headers: str = "", body: bytes = JSON_BODY) -> Read:
    sent = dict(line.split(": ", 1) for line in filter(None, headers.split("\r\n")))
    sent["Content-Type"] = "application/json"
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        chunks: list[bytes] = []
        async with http.stream("POST", url, content=body, headers=sent) as response:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
        return Read(response.status_code, time.perf_counter() - started, b"".join(chunks))


async def reads(urls: list[str], folder: Path, headers: str = "") -> list[Read]:
    reader = curl if shutil.which("curl") else httpx_read
    done = []
    for i, url in enumerate(urls):
        read = await reader(url, folder / f"stream-{i}.sse", headers)
        if read.status != 200 or not read.completed:
            raise RuntimeError(f"{url}: HTTP {read.status}, {read.events} events, no done")
        done.append(read)
    return done[1:]  # the first is the warm-up


async def run(ctx: Context, result: Result) -> None:
    n = ctx.size(20_000, 500)
    reps = ctx.size(3, 1)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("stream", n))
    sessions = await api.sessions(agent, reps + 1)
    base_url = f"http://127.0.0.1:{server.port}"
    cpu = server.cpu_s()
    ours = await reads([f"{base_url}/sessions/{s}/message/stream" for s in sessions], ctx.root)
    cpu = server.cpu_s() - cpu
    result.details["sessiond_rss_kb_after"] = server.rss_kb()
    keyed = await api.with_auth(ctx.db)
    keyed_urls = [
        f"{base_url}/sessions/{s}/message/stream" for s in await keyed.sessions(agent, reps + 1)
    ]
    with_key = await reads(keyed_urls, ctx.root, keyed.headers)
    await ctx.stop(server)

    baseline = await ctx.baseline()
    url = f"http://127.0.0.1:{baseline.port}/stream?words={n}"
    base_cpu = baseline.cpu_s()
    theirs = await reads([url] * (reps + 1), ctx.root)
    base_cpu = baseline.cpu_s() - base_cpu
    await ctx.stop(baseline)

    rate = median([r.events / r.seconds for r in ours])
    base = median([r.events / r.seconds for r in theirs])
    result.details |= {
        "events_per_run": ours[0].events,
        "reader": "curl" if shutil.which("curl") else "httpx",
        "sessiond_seconds": [r.seconds for r in ours],
        "baseline_seconds": [r.seconds for r in theirs],
    }
    share = ratio(rate, base)
    events = ours[0].events * (reps + 1)  # the warm-up's too: the CPU span covers it
    per_event, base_per_event = cpu / events * 1e6, base_cpu / events * 1e6
    result.add(
        Figure(
            "events/s (curl)",
            rate,
            "ev/s",
            base,
            share,
            "≥ 1.0x baseline",
            share is not None and share >= 1.0,
        )
    )
    keyed_rate = median([r.events / r.seconds for r in with_key])
    keyed_share = ratio(keyed_rate, rate)
    result.add(
        Figure(
            "events/s, auth on (vs off)",
            keyed_rate,
            "ev/s",
            rate,
            keyed_share,
            "≥ 0.95x auth off",
            keyed_share is not None and keyed_share >= 0.95,
        )
    )
    result.add(
        Figure(
            "server CPU per event",
            per_event,
            "µs",
            base_per_event,
            ratio(per_event, base_per_event),
        )
    )
