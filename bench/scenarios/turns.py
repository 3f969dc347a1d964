"""3. Blocking turns.

32 clients, each on its own keep-alive connection and its own session, send short blocking
turns (POST /sessions/{id}/message, a two-word scripted reply) back to back for 20 s; turns/s
counts the answers that came back 200 with a completed run. The baseline is the same client
against the bare app's POST /turn (decode a JSON body, answer a JSON object) for 5 s: the
framework's ceiling on this machine. Each session's history grows as the run goes on, so the
throughput of each 5 s window is reported too.

Then an admin key is made on the server's database (`sessiond keys create`, as an operator
would), which turns auth on, and 32 fresh sessions do the same for as long again with the
key on every request: turns/s with auth on, against the same server's with it off.
"""

from __future__ import annotations

import asyncio
import time

from bench import client, workload
from bench.harness import JSON_BODY, Api, Context
from bench.report import Figure, Result, percentile, ratio

NAME = "turns"
TITLE = "32 clients doing short blocking turns for 20 s"
BUDGET_S = 90.0
CLIENTS = 32
WINDOW_S = 5.0
MAX_TURNS = 1_000_000  # per client: the time limit ends the loop long before


class Load:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.finished: list[float] = []
        self.errors: list[str] = []


async def worker(
    port: int, path: str, body: bytes, until: float, load: Load, headers: str = ""
) -> None:
    conn = await client.connect(port)
    try:
        for _ in range(MAX_TURNS):
            started = time.perf_counter()
            if started >= until:
                break
            try:
                response = await asyncio.wait_for(conn.request("POST", path, body, headers), 30)
            except (OSError, client.HttpError, TimeoutError) as exc:
                load.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = await client.connect(port)
                continue
            ended = time.perf_counter()
            if response.status != 200 or b'"status":"completed"' not in response.body:
                load.errors.append(f"HTTP {response.status}: {response.body[:200]!r}")
                continue
            load.latencies.append(ended - started)
            load.finished.append(ended)
    finally:
        conn.close()


async def drive(
    port: int, paths: list[str], body: bytes, seconds: float, headers: str = ""
) -> tuple[Load, float]:
    load = Load()
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(worker(port, p, body, until, load, headers) for p in paths))
    return load, time.perf_counter() - started


def windows(load: Load, started: float, seconds: float) -> list[float]:
    count = max(1, round(seconds / WINDOW_S))
    width = seconds / count
    buckets = [0] * count
    for t in load.finished:
        buckets[min(count - 1, int((t - started) / width))] += 1
    return [b / width for b in buckets]


async def run(ctx: Context, result: Result) -> None:
    seconds = ctx.size(20.0, 1.0)
    base_seconds = ctx.size(5.0, 0.5)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("turns", 2))
    sessions = await api.sessions(agent, CLIENTS)
    paths = [f"/sessions/{s}/message" for s in sessions]
    await drive(server.port, paths, JSON_BODY, 0.2)  # warm-up
    started, cpu = time.perf_counter(), server.cpu_s()
    ours, elapsed = await drive(server.port, paths, JSON_BODY, seconds)
    cpu = server.cpu_s() - cpu
    result.details["turns_per_s_by_window"] = windows(ours, started, elapsed)
    result.details["sessiond_rss_kb_after"] = server.rss_kb()
    keyed = await api.with_auth(ctx.db)  # the same server, asking for a key from now on
    keyed_paths = [f"/sessions/{s}/message" for s in await keyed.sessions(agent, CLIENTS)]
    await drive(server.port, keyed_paths, JSON_BODY, 0.2, keyed.headers)
    with_key, keyed_elapsed = await drive(
        server.port, keyed_paths, JSON_BODY, seconds, keyed.headers
    )
    await ctx.stop(server)

    baseline = await ctx.baseline()
    base_paths = ["/turn"] * CLIENTS
    await drive(baseline.port, base_paths, JSON_BODY, 0.2)
    base_cpu = baseline.cpu_s()
    theirs, base_elapsed = await drive(baseline.port, base_paths, JSON_BODY, base_seconds)
    base_cpu = baseline.cpu_s() - base_cpu
    await ctx.stop(baseline)

    rate = len(ours.latencies) / elapsed
    base_rate = len(theirs.latencies) / base_elapsed
    result.details |= {"turns": len(ours.latencies), "errors_sample": ours.errors[:5]}
    result.add(
        Figure("turns/s", rate, "/s", base_rate, ratio(rate, base_rate), "≥ 1,000/s", rate >= 1000)
    )
    for q in (50, 99):
        mine, base = percentile(ours.latencies, q), percentile(theirs.latencies, q)
        value = None if mine is None else mine * 1000
        base_ms = None if base is None else base * 1000
        result.add(Figure(f"p{q} latency", value, "ms", base_ms, ratio(value, base_ms)))
    per_turn = cpu / max(1, len(ours.latencies)) * 1000
    base_per_turn = base_cpu / max(1, len(theirs.latencies)) * 1000
    result.add(
        Figure("server CPU per turn", per_turn, "ms", base_per_turn, ratio(per_turn, base_per_turn))
    )
    result.add(Figure("errors", len(ours.errors), "", target="0", ok=not ours.errors))
    keyed_rate = len(with_key.latencies) / keyed_elapsed
    share = ratio(keyed_rate, rate)
    result.add(
        Figure(
            "turns/s, auth on (vs off)",
            keyed_rate,
            "/s",
            rate,
            share,
            "≥ 0.95x auth off",
            share is not None and share >= 0.95 and not with_key.errors,
        )
    )
    result.details["auth_on_errors_sample"] = with_key.errors[:5]
