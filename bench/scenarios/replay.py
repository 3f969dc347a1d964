"""7. Replay.

A finished 5,000-event run (a 4,994-word scripted reply) read back through GET
/sessions/{id}/runs/{run_id}/events: the run is no longer active, so every event comes from
the database. events/s = events received / (request sent → `done` received), median of nine
reads; the bare app serving the same number of pre-encoded frames one per chunk is the
baseline.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from bench import client, workload
from bench.harness import Api, Context
from bench.report import Figure, Result, median, ratio

NAME = "replay"
TITLE = "read back a finished 5,000-event run from the database"
BUDGET_S = 60.0


async def read(port: int, method: str, path: str, body: bytes | None) -> tuple[int, float]:
    count = 0
    finished = 0.0

    def on_event(kind: bytes, data: bytes, t: float) -> None:
        nonlocal count, finished
        count += 1
        if kind == b"done":
            finished = t

    conn = await client.connect(port)
    try:
        started = time.perf_counter()
        response = await asyncio.wait_for(conn.stream(method, path, on_event, body), 60)
    finally:
        conn.close()
    if response.status != 200 or not finished:
        raise RuntimeError(f"{path}: HTTP {response.status}, {count} events, no done")
    return count, finished - started


async def rates(port: int, method: str, path: str, body: bytes | None, reps: int) -> list[float]:
    await read(port, method, path, body)  # warm-up
    found = []
    for _ in range(reps):
        count, seconds = await read(port, method, path, body)
        found.append(count / seconds)
    return found


async def run(ctx: Context, result: Result) -> None:
    events = ctx.size(5000, 500)
    reps = ctx.size(9, 2)
    words = events - workload.TEXT_EVENTS_OVERHEAD
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("replay", words))
    session = (await api.sessions(agent, 1))[0]
    run_id = msgspec.json.decode(await api.turn(session))["run_id"]
    path = f"/sessions/{session}/runs/{run_id}/events"
    ours = await rates(server.port, "GET", path, None, reps)
    await ctx.stop(server)

    baseline = await ctx.baseline()
    theirs = await rates(baseline.port, "POST", f"/stream?words={words}", b"{}", reps)
    await ctx.stop(baseline)

    rate, base = median(ours), median(theirs)
    result.details |= {"events": events, "sessiond_rates": ours, "baseline_rates": theirs}
    result.add(Figure("replay events/s", rate, "ev/s", base, ratio(rate, base)))
